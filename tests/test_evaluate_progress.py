"""`bagel-world eval-progress`: the metrics, and a run on the real navigate twin with a fake judge."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeSimulator, LocatingMixin

from bagel_world.evaluate_progress import auroc, evaluate_progress
from bagel_world.simulator.tasks import default_templates


def test_auroc_is_the_share_of_positive_negative_pairs_ranked_right():
    labels = np.array([True, True, False, False, False])
    assert auroc(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), labels) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.9, 0.8, 0.7]), labels) == 0.0
    # 0.5 beats 2 of 3 negatives and 0.15 beats 1 of 3: 3 right pairs of 6.
    assert auroc(np.array([0.5, 0.15, 0.1, 0.2, 0.6]), labels) == pytest.approx(0.5)
    assert np.isnan(auroc(np.array([0.5, 0.4]), np.array([False, False])))


def test_eval_progress_on_the_real_twin_with_a_fake_judge():
    from bagel_world.sims import missing_packages

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    sim = FakeSimulator(default_templates(large=False))
    res = evaluate_progress(sim, seeds=[0], steps=6, ahead=2, layout="one_room", progress=False)
    assert res["frames"] >= 3 and res["imagined_pairs"] >= 1
    # The fake judge may answer one bin for every frame (Spearman is then undefined: nan).
    assert isinstance(res["spearman_real"], float) and res["real_distance_range"][1] > 0
    assert {q for q, _, with_goal in sim.score_calls if with_goal} == {
        "How far away is the goal view?", "Have you reached the goal view?"}
    assert not sim._sessions  # every judged or imagined session was closed
    with pytest.raises(ValueError, match="no progress judge"):
        evaluate_progress(sim, task="manipulate")
    with pytest.raises(ValueError, match="ahead"):
        evaluate_progress(sim, steps=2, ahead=4)


def test_eval_progress_under_the_view_rule_measures_the_view_distance(capsys):
    from bagel_world.sims import missing_packages

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    from bagel_world.cli import main as cli_main
    from bagel_world.evaluate_progress import walk

    _, _, dist, ok, _, infos = walk("navigate", 0, 6, 0.3, "one_room", "view")
    assert np.allclose(dist, [i["view_distance"] for i in infos]) and list(ok) == [i["view_success"] for i in infos]
    _, _, pose_dist, _, _, infos = walk("navigate", 0, 6, 0.3, "one_room")
    assert np.allclose(pose_dist, [i["goal_distance"] for i in infos])
    sim = FakeSimulator(default_templates(large=False))
    assert evaluate_progress(sim, seeds=[0], steps=4, ahead=2, layout="one_room", success="view",
                             progress=False)["success"] == "view"
    assert cli_main(["eval-progress", "--success", "near"]) == 2
    assert "unknown success rule 'near'; accepted: ['pose', 'view']" in capsys.readouterr().err


class ConstantPlaceFake(LocatingMixin, FakeSimulator):
    """A location judge that places every frame at x = z = 4 m, heading 0."""

    def place_of(self, frame):
        return 4.0, 4.0, 0.0


def test_eval_progress_with_the_location_judge_measures_its_place_errors():
    from bagel_world.sims import missing_packages

    if missing_packages("navigate"):
        pytest.skip(f"the navigate twin needs {missing_packages('navigate')}")
    from bagel_world.evaluate_progress import walk
    from bagel_world.simulator.progress import LOCATE_QUESTIONS

    sim = ConstantPlaceFake(default_templates(large=False))
    res = evaluate_progress(sim, seeds=[0], steps=6, ahead=2, layout="one_room", landmarks=True, judge="located",
                            progress=False)
    _, _, _, _, _, infos = walk("navigate", 0, 6, 0.3, "one_room", None, True)
    real = np.array([i["agent_pos"] for i in infos])
    yaw = np.abs(np.array([i["agent_yaw_deg"] for i in infos]))
    assert res["judge"] == "located" and res["frames"] == len(infos)
    assert res["median_place_error_m"] == pytest.approx(float(np.median(np.hypot(*(real - 4.0).T))), abs=1e-4)
    assert res["median_heading_error_deg"] == pytest.approx(float(np.median(yaw)), abs=1e-3)
    # the goal image is placed at (4, 4) too: its error is the distance from there to the goal pose
    goal_pos, goal_yaw = np.asarray(infos[0]["goal_pos"]), abs(infos[0]["goal_yaw_deg"])
    assert res["median_goal_place_error_m"] == pytest.approx(float(np.hypot(*(goal_pos - 4.0))), abs=1e-4)
    assert res["median_goal_heading_error_deg"] == pytest.approx(min(goal_yaw, 360 - goal_yaw), abs=1e-3)
    assert res["goals_placed_over_0_5m"] == float(np.hypot(*(goal_pos - 4.0)) > 0.5)
    assert {q for q, _, _ in sim.score_calls} == set(LOCATE_QUESTIONS)  # no goal-conditioned question asked
    assert not any(with_goal for _, _, with_goal in sim.score_calls) and not sim._sessions
    with pytest.raises(ValueError, match="bins are for layout 'one_room', not 'four_rooms'"):
        evaluate_progress(sim, layout="four_rooms", judge="located")
    with pytest.raises(ValueError, match="judge must be 'distance' or 'located'"):
        evaluate_progress(sim, layout="one_room", judge="pixels")
