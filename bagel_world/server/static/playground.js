// bagel-world playground: pick an env, reset, act, watch frames and rewards, save a GIF.
// Talks to the same /v1 API as any client; every server value is shown with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { envs: {}, episode: null, env: null, ret: 0, busy: false };

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  const resp = await fetch(path, {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { const e = (await resp.json()).error; msg = resp.status + " " + e.code + ": " + e.message; } catch (_) {}
    throw new Error(msg);
  }
  return resp;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function setBusy(busy) {
  state.busy = busy;
  for (const el of document.querySelectorAll("button")) el.disabled = busy;
  $("gif").disabled = busy || !state.episode;
}

// An uploaded image (any format the browser reads), scaled to the env's resolution, as a PNG data URL.
async function imageAsPng(file, height, width) {
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, width, height);
  return canvas.toDataURL("image/png");
}

async function loadEnvs() {
  try {
    const data = await (await api("GET", "/v1/envs")).json();
    const select = $("env");
    select.replaceChildren();
    for (const env of data.envs) {
      state.envs[env.env_id] = env;
      const opt = document.createElement("option");
      opt.value = env.env_id; opt.textContent = env.env_id;
      select.appendChild(opt);
    }
    showEnv();
    status("Ready: pick an env and press Reset.");
  } catch (err) {
    status("Cannot list envs: " + err.message + (err.message.startsWith("401") ? " (enter the token)" : ""), true);
  }
}

function showEnv() {
  const env = state.envs[$("env").value];
  if (!env) return;
  $("env-description").textContent = env.description;
  $("goal-row").hidden = !env.has_goal;
  const box = $("actions");
  box.replaceChildren();
  env.actions.forEach((text, i) => {
    const b = document.createElement("button");
    b.type = "button"; b.className = "action"; b.dataset.index = String(i); b.textContent = text;
    b.addEventListener("click", () => step(i));
    box.appendChild(b);
  });
}

async function reset() {
  const env = state.envs[$("env").value];
  if (!env) return;
  setBusy(true);
  status("Resetting " + env.env_id + "...");
  try {
    if (state.episode) {  // free the old one; ignore failures (it may have expired)
      api("DELETE", "/v1/episodes/" + state.episode).catch(() => {});
    }
    const body = {};
    const seed = $("seed").value.trim();
    if (seed !== "") body.seed = parseInt(seed, 10);
    const instruction = $("instruction").value.trim();
    if (instruction) body.options = { instruction };
    const [h, w] = env.resolution;
    if ($("start-image").files.length) body.start_image = await imageAsPng($("start-image").files[0], h, w);
    if (env.has_goal && $("goal-image").files.length) body.goal_image = await imageAsPng($("goal-image").files[0], h, w);
    const ep = await (await api("POST", "/v1/envs/" + encodeURIComponent(env.env_id) + "/episodes", body)).json();
    state.episode = ep.episode_id; state.env = env; state.ret = 0;
    $("frame").src = "data:image/png;base64," + ep.frame;
    $("frame").hidden = false;  // no <img> without a src before the first reset: no broken-image icon
    $("frame-placeholder").hidden = true;
    $("goal-figure").hidden = !ep.goal;
    if (ep.goal) $("goal").src = "data:image/png;base64," + ep.goal;
    $("log").tBodies[0].replaceChildren();
    $("step-count").textContent = "0";
    $("return").textContent = "0";
    $("done").textContent = "";
    status("Episode " + ep.episode_id + " started" + (ep.info.instruction ? ": " + ep.info.instruction : "."));
  } catch (err) {
    status("Reset failed: " + err.message, true);
  } finally {
    setBusy(false);
  }
}

async function step(action) {
  if (!state.episode) { status("Press Reset first.", true); return; }
  if (state.busy) return;
  setBusy(true);
  const label = typeof action === "number" ? state.env.actions[action] : action;
  try {
    const r = await (await api("POST", "/v1/episodes/" + state.episode + "/step", { action })).json();
    state.ret = r.episode_return;
    $("frame").src = "data:image/png;base64," + r.frame;
    $("step-count").textContent = String(r.step);
    $("return").textContent = r.episode_return.toFixed(3);
    const end = r.terminated ? "terminated" : r.truncated ? "truncated" : "";
    $("done").textContent = end ? "(" + end + ": reset to play again)" : "";
    const row = document.createElement("tr");
    for (const v of [r.step, label, r.reward.toFixed(3), r.episode_return.toFixed(3), end]) {
      const td = document.createElement("td"); td.textContent = String(v); row.appendChild(td);
    }
    $("log").tBodies[0].appendChild(row);
    status("Step " + r.step + ": reward " + r.reward.toFixed(3));
  } catch (err) {
    status("Step failed: " + err.message, true);
  } finally {
    setBusy(false);
  }
}

async function downloadGif() {
  if (!state.episode) return;
  try {
    const blob = await (await api("GET", "/v1/episodes/" + state.episode + "/gif")).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = state.env.env_id + "-" + state.episode + ".gif";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) {
    status("GIF failed: " + err.message, true);
  }
}

$("token").value = localStorage.getItem("bagel-world-token") || "";
$("token").addEventListener("change", () => { localStorage.setItem("bagel-world-token", $("token").value); loadEnvs(); });
$("env").addEventListener("change", showEnv);
$("reset").addEventListener("click", reset);
$("gif").addEventListener("click", downloadGif);
$("action-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("action-text").value.trim();
  if (text) step(text);
});
loadEnvs();
