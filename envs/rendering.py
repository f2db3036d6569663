"""What the envs show: the frame rate of their videos, the render modes they declare, and
the pygame window of `render_mode="human"` (pygame is optional and imported only here)."""

from __future__ import annotations

import importlib.util

import numpy as np

# Frames per second of videos of an episode, for the imagined envs and their real twins alike.
RENDER_FPS = 4


def have_pygame() -> bool:
    try:
        return importlib.util.find_spec("pygame") is not None
    except ValueError:  # a module put in sys.modules without a spec
        return False


def render_modes() -> list[str]:
    """The render modes the envs declare: "human" only where pygame is installed, because
    `check_env` makes an env in every declared mode (and gym.make(render_mode="human")
    otherwise falls back to Gymnasium's `HumanRendering`, which needs pygame too)."""
    return ["rgb_array", "human"] if have_pygame() else ["rgb_array"]


class HumanWindow:
    """The pygame window of `render_mode="human"`: shows (H, W, 3) uint8 frames at `fps`,
    scaled up `scale` times. Opened on the first frame; pygame is imported only here."""

    def __init__(self, title: str, fps: int, scale: int = 4):
        self.title, self.fps, self.scale = title, fps, scale
        self._window = None
        self._clock = None

    def show(self, frame: np.ndarray) -> None:
        import pygame

        if self._window is None:
            pygame.init()
            pygame.display.init()
            pygame.display.set_caption(self.title)
            H, W = frame.shape[:2]
            self._window = pygame.display.set_mode((W * self.scale, H * self.scale))
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))  # (W, H, 3)
        self._window.blit(pygame.transform.scale(surface, self._window.get_size()), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            pygame.quit()
            self._window = None
