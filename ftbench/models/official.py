"""Official Phi-3(.5)-vision checkpoints (``microsoft/Phi-3.5-vision-instruct``,
``microsoft/Phi-3-vision-128k-instruct``) loaded into the native model without remote code.

The official folder layout: a ``config.json`` written for the remote code (``model_type`` phi3_v,
``auto_map``, ``_attn_implementation`` flash_attention_2, ``rope_scaling`` of type ``su``, no CLIP
config: the remote module hard-codes CLIP ViT-L/14-336), safetensors shards listed in
``model.safetensors.index.json``, and tensor names that are exactly the native model's
``state_dict`` keys. Loading here is strict: every tensor must be present with its shape and nothing
else may be in the shards, except two normalisations (``normalize_key``). Only safetensors are read
(never ``torch.load``, never ``trust_remote_code``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from ftbench.hub import COMMIT_RE, HUB_ID_RE
from ftbench.models.phi3v import CLIP_VIT_L_336, Phi3VConfig, Phi3VForCausalLM

MODEL_TYPE = "phi3_v"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# config.json keys that only the remote code (or old transformers) understands.
DROPPED_CONFIG_KEYS = ("auto_map", "_attn_implementation", "transformers_version", "architectures", "model_type",
                       "_name_or_path", "torch_dtype", "rope_scaling")
# Ids of the real Phi-3 tokenizer: a chat turn ends with <|end|> then <|endoftext|> (config.json says 2).
OFFICIAL_EOS = [32007, 32000]
OFFICIAL_IMAGE_TOKEN_ID = 32044

WTE_ALIAS = "model.vision_embed_tokens.wte.weight"
CLIP_PREFIX = "model.vision_embed_tokens.img_processor."
CLIP_WRAPPED = CLIP_PREFIX + "vision_model."

HUB_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model"]


# ---------------------------------------------------------------------------------------------
# config


def is_official_config(config_json: dict) -> bool:
    """True for a config.json in the official (remote-code) form, False for one that ftbench saved
    (which always has ``rope_parameters`` and ``vision_config`` and never ``auto_map``)."""
    rope_scaling = config_json.get("rope_scaling") or {}
    rope_type = rope_scaling.get("type", rope_scaling.get("rope_type")) if isinstance(rope_scaling, dict) else None
    return (
        "auto_map" in config_json
        or rope_type in ("su", "longrope")
        or "rope_parameters" not in config_json
        or "vision_config" not in config_json
    )


def _rope_parameters(cfg: dict, head_dim: int) -> dict:
    theta = float(cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("type", scaling.get("rope_type"))
    if kind not in ("su", "longrope"):
        raise ValueError(
            f"config.json: rope_scaling type {kind!r} is not supported (Phi-3 vision uses 'su'/'longrope')"
        )
    extra = set(scaling) - {"type", "rope_type", "short_factor", "long_factor", "original_max_position_embeddings"}
    if extra:
        raise ValueError(f"config.json: rope_scaling has keys this loader does not map: {sorted(extra)}")
    original = scaling.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings", 4096))
    params = {"rope_type": "longrope", "rope_theta": theta, "original_max_position_embeddings": int(original)}
    for name in ("short_factor", "long_factor"):
        factors = scaling.get(name)
        if not isinstance(factors, list) or len(factors) != head_dim // 2:
            got = len(factors) if isinstance(factors, list) else factors
            raise ValueError(
                f"config.json: rope_scaling.{name} must be a list of head_dim/2 = {head_dim // 2} floats, got {got}"
            )
        params[name] = [float(f) for f in factors]
    return params


def _check_supported_vision(cfg: dict, vision: dict) -> None:
    """The native image embedding implements one variant of the remote code: refuse the others."""
    embd = cfg.get("embd_layer") or {}
    wanted = {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
              "use_hd_transform": True, "with_learnable_separator": True}
    for key, value in wanted.items():
        if key in embd and embd[key] != value:
            raise ValueError(f"config.json: embd_layer.{key} = {embd[key]!r} is not supported (only {value!r})")
    proc = cfg.get("img_processor") or {}
    if proc.get("name", "clip_vision_model") != "clip_vision_model":
        raise ValueError(f"config.json: img_processor.name {proc['name']!r} is not supported (only clip_vision_model)")
    if proc.get("type_feature", "patch") != "patch":
        raise ValueError(
            f"config.json: img_processor.type_feature {proc['type_feature']!r} is not supported (only 'patch')"
        )
    if "image_dim_out" in proc and int(proc["image_dim_out"]) != int(vision["hidden_size"]):
        raise ValueError(
            f"config.json: img_processor.image_dim_out {proc['image_dim_out']} differs from the CLIP width "
            f"{vision['hidden_size']}"
        )


def native_config_from_official(config_json: dict, attention: str = "sdpa",
                                num_crops: int | None = None) -> Phi3VConfig:
    """The official config.json (as a dict) -> the native ``Phi3VConfig``.

    ``rope_scaling`` (type ``su``/``longrope``) becomes explicit ``rope_parameters`` (transformers 5.x
    raises KeyError on the old form); the remote-code keys are dropped; the CLIP config is the
    hard-coded ViT-L/14-336 unless the json has a ``vision_config`` (the official json has none;
    tiny test checkpoints give one); eos becomes [<|end|>, <|endoftext|>] = [32007, 32000]."""
    cfg = dict(config_json)
    hidden = int(cfg.get("hidden_size", 3072))
    heads = int(cfg.get("num_attention_heads", 32))
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    rope_parameters = _rope_parameters(cfg, head_dim)
    for key in DROPPED_CONFIG_KEYS + ("rope_theta", "dtype", "eos_token_id", "attn_implementation"):
        cfg.pop(key, None)
    vision = dict(cfg.pop("vision_config", None) or CLIP_VIT_L_336)
    _check_supported_vision(cfg, vision)
    img_processor = dict(cfg.pop("img_processor", None) or {
        "image_dim_out": vision["hidden_size"], "model_name": "openai/clip-vit-large-patch14-336",
        "name": "clip_vision_model", "num_img_tokens": 144,
    })
    img_processor.setdefault("layer_idx", -2)
    img_processor.setdefault("type_feature", "patch")
    cfg.setdefault("tie_word_embeddings", False)
    if num_crops is not None:
        cfg["num_crops"] = int(num_crops)
    cfg.setdefault("image_token_id", OFFICIAL_IMAGE_TOKEN_ID)
    try:
        return Phi3VConfig(
            **cfg,
            rope_parameters=rope_parameters,
            vision_config=vision,
            img_processor=img_processor,
            eos_token_id=list(OFFICIAL_EOS),
            attn_implementation=attention,
        )
    except StrictDataclassError as e:  # not a ValueError: make it one, on one line
        raise ValueError("config.json: " + " ".join(str(e).split())) from None


def read_config_json(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a checkpoint folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    # Another architecture would otherwise fail deep inside the model's constructor.
    model_type = config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path}: model_type {model_type!r} is another architecture; ftbench loads {MODEL_TYPE!r} "
                         "(Phi-3 vision) checkpoints only")
    return config


def _preprocessor_num_crops(folder: Path) -> int | None:
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("num_crops")
    except (json.JSONDecodeError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def config_for_folder(folder: Path, attention: str = "sdpa") -> Phi3VConfig:
    """Native config of a checkpoint folder, official or saved by ftbench."""
    raw = read_config_json(folder)
    if is_official_config(raw):
        return native_config_from_official(raw, attention, num_crops=_preprocessor_num_crops(folder))
    try:
        config = Phi3VConfig.from_pretrained(str(folder))
    except StrictDataclassError as e:
        raise ValueError(f"{folder}/config.json: " + " ".join(str(e).split())) from None
    config._attn_implementation = attention
    return config


# ---------------------------------------------------------------------------------------------
# safetensors shards


def normalize_key(key: str) -> str | None:
    """Checkpoint tensor name -> native name, or None to drop it.

    - ``model.vision_embed_tokens.wte.weight``: an alias of ``model.embed_tokens.weight`` that some
      fine-tunes saved (the official checkpoints de-duplicate it): dropped.
    - CLIP keys without ``vision_model.`` (``...img_processor.embeddings...``, as transformers >= 5.12
      saves a CLIPVisionModel): ``vision_model.`` is inserted."""
    if key == WTE_ALIAS:
        return None
    if key.startswith(CLIP_PREFIX) and not key.startswith(CLIP_WRAPPED):
        return CLIP_WRAPPED + key[len(CLIP_PREFIX):]
    return key


def shard_files(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """The safetensors files of a checkpoint folder and the index's weight_map ({} without an index).
    A folder holding only pickle weights (.bin/.pt) is refused: they can run code when read."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index with a weight_map ({e})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"{folder}: {INDEX_FILE} lists shard files that are not there: {', '.join(missing)}")
        return [folder / n for n in names], dict(weight_map)
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE], {}
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        raise ValueError(
            f"{folder}: only pickle weights ({', '.join(pickles[:3])}); ftbench loads safetensors only "
            "(pickle files can execute code when loaded): convert them with a trusted tool first"
        )
    raise FileNotFoundError(f"{folder}: no {SINGLE_FILE} and no {INDEX_FILE}")


def read_headers(folder: Path) -> tuple[dict[str, tuple[Path, str, tuple[int, ...]]], list[str]]:
    """Tensor headers of every shard, keyed by NATIVE name: {name: (file, original name, shape)},
    plus problem lines (duplicates, index entries that disagree with the files). No data is read."""
    from safetensors import safe_open

    files, weight_map = shard_files(folder)
    headers: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                seen[key] = path
                name = normalize_key(key)
                if name is None:
                    continue
                if name in headers:
                    problems.append(f"duplicate: {name} is stored twice "
                                    f"({headers[name][1]} in {headers[name][0].name}, "
                                    f"{key} in {path.name})")
                    continue
                headers[name] = (path, key, tuple(f.get_slice(key).get_shape()))
    for key, file in weight_map.items():
        if key not in seen:
            problems.append(f"index: {INDEX_FILE} puts {key} in {file}, which does not hold it")
        elif seen[key].name != file:
            problems.append(f"index: {INDEX_FILE} puts {key} in {file}, but it is in {seen[key].name}")
    return headers, problems


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def compare_with_model(headers: dict, expected: dict[str, tuple[int, ...]]) -> tuple[list, list, list]:
    """(missing, unexpected, wrong shape) between checkpoint headers and the model's state_dict shapes."""
    missing = sorted(k for k in expected if k not in headers)
    unexpected = sorted(k for k in headers if k not in expected)
    wrong = sorted(k for k in headers if k in expected and tuple(headers[k][2]) != tuple(expected[k]))
    return missing, unexpected, wrong


def meta_model(config: Phi3VConfig) -> Phi3VForCausalLM:
    """The architecture with no storage (instant, even at full size)."""
    with torch.device("meta"):
        return Phi3VForCausalLM(config)


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_checkpoint(folder: Path) -> list[str]:
    """One human line per difference between a checkpoint folder's shards and the architecture its
    config.json describes (missing tensor, unexpected tensor, wrong shape, index inconsistencies).
    Reads only the safetensors headers; an empty list means the folder loads strictly."""
    folder = Path(folder)
    config = config_for_folder(folder)
    expected = expected_shapes(meta_model(config))
    headers, problems = read_headers(folder)
    missing, unexpected, wrong = compare_with_model(headers, expected)
    lines = [f"missing: {k} (model expects {_shape(expected[k])})" for k in missing]
    lines += [f"unexpected: {k} {_shape(headers[k][2])} in {headers[k][0].name}" for k in unexpected]
    lines += [f"wrong shape: {k} is {_shape(headers[k][2])} in {headers[k][0].name}, "
              f"model expects {_shape(expected[k])}"
              for k in wrong]
    return lines + problems


def _summary(kind: str, keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} {kind} ({shown}{more})"


def mismatch_error(folder: Path, headers: dict, expected: dict, problems: list[str]) -> ValueError | None:
    missing, unexpected, wrong = compare_with_model(headers, expected)
    if not (missing or unexpected or wrong or problems):
        return None
    parts = []
    if missing:
        parts.append(_summary("missing", missing))
    if unexpected:
        parts.append(_summary("unexpected", unexpected))
    if wrong:
        parts.append(_summary("wrong shape", [f"{k} {_shape(headers[k][2])} vs {_shape(expected[k])}" for k in wrong]))
    if problems:
        parts.append(_summary("other", problems, limit=2))
    return ValueError(f"{folder}: checkpoint does not match its config: " + "; ".join(parts))


# ---------------------------------------------------------------------------------------------
# loading


def load_official(
    folder: Path,
    attention: str = "sdpa",
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> Phi3VForCausalLM:
    """An official-layout checkpoint folder -> the native model in eval mode, strictly.

    Headers are checked first against the architecture (built on the meta device): any missing,
    unexpected or wrong-shaped tensor raises one ValueError naming the folder and the keys, before a
    byte of data is read. Then the model is allocated without initialisation (its non-persistent
    buffers, e.g. the rope frequencies, are computed by the constructors) and every tensor is copied
    in from the shards, cast to ``dtype``."""
    from safetensors import safe_open
    from transformers.initialization import no_init_weights

    folder = Path(folder)
    raw = read_config_json(folder)
    config = native_config_from_official(raw, attention, num_crops=_preprocessor_num_crops(folder))
    headers, problems = read_headers(folder)
    error = mismatch_error(folder, headers, expected_shapes(meta_model(config)), problems)
    if error is not None:
        raise error

    config.dtype = dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), torch.device(device):
            model = Phi3VForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    targets = model.state_dict(keep_vars=True)
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for name, (path, key, _) in headers.items():
        by_file.setdefault(path, []).append((name, key))
    with torch.no_grad():
        for path, names in by_file.items():
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name, key in names:
                    targets[name].copy_(f.get_tensor(key))
    model.eval()
    return model


def official_from_pretrained(folder: Path, attention: str, dtype: torch.dtype, **kwargs) -> Phi3VForCausalLM:
    """An official folder through ``from_pretrained`` (needed for bitsandbytes quantisation), with the
    native config, the key normalisation as a ``key_mapping`` and the same strictness: headers are
    checked first, then the loading report must be clean."""
    from transformers import GenerationConfig

    folder = Path(folder)
    config = config_for_folder(folder, attention)
    headers, problems = read_headers(folder)
    error = mismatch_error(folder, headers, expected_shapes(meta_model(config)), problems)
    if error is not None:
        raise error
    model, info = Phi3VForCausalLM.from_pretrained(
        str(folder), config=config, attn_implementation=attention, dtype=dtype, use_safetensors=True,
        key_mapping={r"^model\.vision_embed_tokens\.img_processor\.(?!vision_model\.)": CLIP_WRAPPED},
        output_loading_info=True, **kwargs,
    )
    bad = {k: [x for x in v if x != WTE_ALIAS] for k, v in info.items() if k != "error_msgs" and v}
    bad = {k: v for k, v in bad.items() if v}
    if bad or info.get("error_msgs"):
        raise ValueError(f"{folder}: from_pretrained did not load strictly: {bad or info['error_msgs']}")
    # The folder's generation_config.json says eos 2; a chat turn ends with <|end|>, <|endoftext|>.
    model.generation_config = GenerationConfig.from_model_config(config)
    return model


# ---------------------------------------------------------------------------------------------
# where checkpoints come from


def resolve_checkpoint(source: str, revision: str | None = None) -> Path:
    """A local checkpoint folder (returned as is, no network), or a Hugging Face hub id downloaded at
    a pinned 40-hex commit ``revision`` (branch or tag names are refused: not reproducible). Only
    json, safetensors and tokenizer files are fetched: never the remote code, never pickle weights."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{source}: not a folder (a checkpoint is a folder with config.json and safetensors)")
    if not HUB_ID_RE.match(source):
        raise FileNotFoundError(f"{source}: no such folder, and not a hub id of the form owner/name")
    if revision is None or not COMMIT_RE.match(revision):
        raise ValueError(
            f"{source}: a hub id needs a pinned revision (a 40-hex commit sha, got {revision!r}) "
            "so that runs are reproducible"
        )
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=source, revision=revision, allow_patterns=list(HUB_DOWNLOAD_PATTERNS)))


__all__ = [
    "check_checkpoint",
    "config_for_folder",
    "is_official_config",
    "load_official",
    "native_config_from_official",
    "normalize_key",
    "resolve_checkpoint",
]
