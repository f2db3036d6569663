"""Configuration of the four BAGEL components, read from a checkpoint folder.

The official loader reads `llm_config.json` and `vit_config.json` and hard-codes
everything else (BagelConfig fields, image transforms, autoencoder params). We read the
two json files the same way, apply the same edits, and take the hard-coded values from
two optional files (`bagel_config.json`, `ae_config.json`) that our own smaller
checkpoints carry. When they are absent the BAGEL-7B-MoT values apply.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class Qwen2MoTConfig:
    """The Qwen2 language model with both experts (`llm_config.json`)."""

    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    vocab_size: int = 152064
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Qwen2MoTConfig:
        # The official loader forces qk_norm=True, tie_word_embeddings=False and the MoT
        # layer; those are not options here, so only the sizes are read.
        return cls(**_fields_from(cls, d))

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            model_type="qwen2",
            architectures=["Qwen2ForCausalLM"],
            hidden_act="silu",
            tie_word_embeddings=False,
            qk_norm=True,
            layer_module="Qwen2MoTDecoderLayer",
            attention_dropout=0.0,
            rope_scaling=None,
        )
        return d


@dataclass
class SiglipConfig:
    """The SigLIP NaViT encoder (`vit_config.json`).

    `num_hidden_layers` here is the number of layers that are *built*: the official
    loader drops the last layer of the file's count (27 -> 26), and so do we.
    """

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26
    num_attention_heads: int = 16
    patch_size: int = 14
    image_size: int = 980
    num_channels: int = 3
    layer_norm_eps: float = 1e-6

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.num_patches_per_side**2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SiglipConfig:
        kw = _fields_from(cls, d)
        if "num_hidden_layers" not in kw:
            raise ConfigError("field 'num_hidden_layers' is missing; accepted: a positive integer")
        # Official edit: the penultimate layer is the feature layer.
        kw["num_hidden_layers"] -= 1
        return cls(**kw)

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_hidden_layers"] = self.num_hidden_layers + 1  # file convention, see above
        d.update(model_type="siglip_vision_model", hidden_act="gelu_pytorch_tanh", attention_dropout=0.0)
        return d


@dataclass
class AutoEncoderConfig:
    """FLUX autoencoder parameters (hard-coded by the official `load_ae`)."""

    resolution: int = 256
    in_channels: int = 3
    downsample: int = 8
    ch: int = 128
    out_ch: int = 3
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    def __post_init__(self) -> None:
        if 2 ** (len(self.ch_mult) - 1) != self.downsample:
            raise ValueError(
                f"ch_mult {self.ch_mult} gives a downsample of {2 ** (len(self.ch_mult) - 1)}, "
                f"but downsample is {self.downsample}"
            )

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> AutoEncoderConfig:
        d = d.get("params", d)
        if not isinstance(d, dict):
            raise ConfigError(f"field 'params' is {_json_type(d)}; accepted: an object of autoencoder parameters")
        return cls(**_fields_from(cls, d))

    def to_json_dict(self) -> dict[str, Any]:
        return {"params": asdict(self)}


@dataclass
class BagelConfig:
    """Everything needed to build the model and its image transforms."""

    llm: Qwen2MoTConfig = field(default_factory=Qwen2MoTConfig)
    vit: SiglipConfig = field(default_factory=SiglipConfig)
    vae: AutoEncoderConfig = field(default_factory=AutoEncoderConfig)
    latent_patch_size: int = 2
    max_latent_size: int = 64
    vit_max_num_patch_per_side: int = 70
    connector_act: str = "gelu_pytorch_tanh"
    interpolate_pos: bool = False
    # Kept because the official BagelConfig has it (upstream training reads it); our sampler
    # and trainer take the shift from TaskTemplate.sampling / TrainConfig.timestep_shift instead.
    timestep_shift: float = 1.0
    # ImageTransform(max_size, min_size, stride) for the VAE and the ViT inputs.
    vae_transform: tuple[int, int, int] = (1024, 512, 16)
    vit_transform: tuple[int, int, int] = (980, 224, 14)

    def __post_init__(self) -> None:
        if self.connector_act != "gelu_pytorch_tanh":
            raise ValueError(f"connector_act {self.connector_act!r} is not supported; only 'gelu_pytorch_tanh'")
        if self.interpolate_pos:
            raise ValueError("interpolate_pos=True is not supported; the official checkpoints use False")
        self.vae_transform = tuple(int(v) for v in self.vae_transform)
        self.vit_transform = tuple(int(v) for v in self.vit_transform)
        if self.vae_transform[2] % self.latent_downsample:
            raise ValueError(
                f"vae_transform stride {self.vae_transform[2]} must be a multiple of the latent "
                f"token size {self.latent_downsample} px"
            )
        if self.vit_transform[2] % self.vit.patch_size:
            raise ValueError(
                f"vit_transform stride {self.vit_transform[2]} must be a multiple of the ViT "
                f"patch size {self.vit.patch_size}"
            )

    # Derived sizes (bagel.py :: Bagel.__init__).
    @property
    def latent_downsample(self) -> int:
        """Pixels per latent token side (8 * 2 = 16)."""
        return self.vae.downsample * self.latent_patch_size

    @property
    def latent_channel(self) -> int:
        return self.vae.z_channels

    @property
    def patch_latent_dim(self) -> int:
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def max_image_side(self) -> int:
        """Largest generated side in pixels: one latent token per 16 px, at most max_latent_size."""
        return self.max_latent_size * self.latent_downsample

    # ---- (de)serialisation -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path) -> BagelConfig:
        folder = Path(folder)
        for name in ("llm_config.json", "vit_config.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder} has no {name}; a BAGEL checkpoint folder holds llm_config.json, "
                    "vit_config.json, ema.safetensors, ae.safetensors and the tokenizer files"
                )
        llm = _read_component(Qwen2MoTConfig.from_json_dict, folder / "llm_config.json")
        vit = _read_component(SiglipConfig.from_json_dict, folder / "vit_config.json")
        ae_path = folder / "ae_config.json"
        vae = _read_component(AutoEncoderConfig.from_json_dict, ae_path) if ae_path.is_file() else AutoEncoderConfig()
        bagel_path = folder / "bagel_config.json"
        kw = _read_component(_bagel_fields, bagel_path) if bagel_path.is_file() else {}
        try:
            return cls(llm=llm, vit=vit, vae=vae, **kw)
        except ValueError as e:  # a cross-file invariant (__post_init__)
            raise ConfigError(f"{folder}: {e}") from None

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "llm_config.json", self.llm.to_json_dict())
        _write_json(folder / "vit_config.json", self.vit.to_json_dict())
        _write_json(folder / "ae_config.json", self.vae.to_json_dict())
        _write_json(
            folder / "bagel_config.json",
            {
                "latent_patch_size": self.latent_patch_size,
                "max_latent_size": self.max_latent_size,
                "vit_max_num_patch_per_side": self.vit_max_num_patch_per_side,
                "connector_act": self.connector_act,
                "interpolate_pos": self.interpolate_pos,
                "timestep_shift": self.timestep_shift,
                "transforms": {
                    "vae_transform": list(self.vae_transform),
                    "vit_transform": list(self.vit_transform),
                },
            },
        )

    def summary(self) -> dict[str, Any]:
        return {
            "llm": asdict(self.llm),
            "vit": asdict(self.vit),
            "vae": asdict(self.vae),
            "latent_patch_size": self.latent_patch_size,
            "max_latent_size": self.max_latent_size,
            "vit_max_num_patch_per_side": self.vit_max_num_patch_per_side,
            "vae_transform": list(self.vae_transform),
            "vit_transform": list(self.vit_transform),
        }


def preset(name: str) -> BagelConfig:
    """Named configurations: `bagel-7b-mot` (the published model) and `tiny` (tests)."""
    if name == "bagel-7b-mot":
        return BagelConfig()
    if name == "tiny":
        return BagelConfig(
            llm=Qwen2MoTConfig(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=288,
            ),
            vit=SiglipConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=112
            ),
            vae=AutoEncoderConfig(ch=32, ch_mult=[1, 1, 2, 2]),
            max_latent_size=16,
            vit_max_num_patch_per_side=8,
            vae_transform=(128, 64, 16),
            vit_transform=(112, 56, 14),
        )
    raise ValueError(f"unknown preset {name!r}; known presets: 'bagel-7b-mot', 'tiny'")


class ConfigError(ValueError):
    """A config file that cannot describe a model; the message names the file and the field."""


_ACCEPTED = {"int": "a positive integer", "float": "a number", "bool": "true or false", "str": "a string",
             "list[int]": "a list of positive integers", "tuple[int, int, int]": "a list of 3 positive integers"}


def _json_type(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return f"{names.get(type(v), type(v).__name__)} ({json.dumps(v)[:40]})"


def _accepts(kind: str, v: Any) -> bool:
    def pos_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 1

    if kind == "int":
        return pos_int(v)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind.startswith(("list[", "tuple[")):
        n = kind.count(",") + 1 if kind.startswith("tuple") else None
        return isinstance(v, list) and all(pos_int(x) for x in v) and (n is None or len(v) == n)
    raise AssertionError(f"no JSON check for field type {kind}")


def _fields_from(cls, d: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of dataclass `cls` present in `d`, each checked against its annotated type.

    Unknown keys are ignored (the official files carry many); a known key with a value of the
    wrong type (a string "256", null, a list) is a ConfigError naming the field and what fits.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"the top level is {_json_type(d)}; accepted: a JSON object")
    out = {}
    for f in fields(cls):
        if f.name not in d or (names is not None and f.name not in names):
            continue
        kind = str(f.type)
        if kind not in _ACCEPTED:
            continue  # nested configs: read from their own files
        if not _accepts(kind, d[f.name]):
            raise ConfigError(f"field {f.name!r} is {_json_type(d[f.name])}; accepted: {_ACCEPTED[kind]}")
        out[f.name] = tuple(d[f.name]) if kind.startswith("tuple") else d[f.name]
    return out


def _bagel_fields(d: Any) -> dict[str, Any]:
    """BagelConfig keywords from `bagel_config.json` (its transforms sit in a sub-object)."""
    kw = _fields_from(BagelConfig, d, names=("latent_patch_size", "max_latent_size", "vit_max_num_patch_per_side",
                                             "connector_act", "interpolate_pos", "timestep_shift"))
    tr = d.get("transforms", {})
    if not isinstance(tr, dict):
        raise ConfigError(f"field 'transforms' is {_json_type(tr)}; accepted: an object with vae_transform "
                          "and vit_transform")
    return kw | _fields_from(BagelConfig, tr, names=("vae_transform", "vit_transform"))


def _read_component(parse, path: Path):
    """`parse(json of path)`, with any error saying which file it is about."""
    try:
        return parse(_read_json(path))
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except ValueError as e:  # a dataclass invariant (__post_init__)
        raise ConfigError(f"{path}: {e}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e


def _write_json(path: Path, d: dict[str, Any]) -> None:
    path.write_text(json.dumps(d, indent=2) + "\n")
