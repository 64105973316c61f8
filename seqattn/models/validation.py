"""Model directories are untrusted input: check ``config.json`` against ``model.safetensors`` before building.

A directory can disagree with itself (a config copied from another run, a hand-edited size, a truncated
weights file). :func:`check_model_dir` finds out before any real memory is allocated:

1. the safetensors header is read on its own (8 bytes of length, then JSON): every tensor's name, dtype and
   shape, and whether the file is long enough to hold them (a truncated file is caught here);
2. the layer count the config asks for is compared with the layers the file holds, so that an absurd
   ``num_layers`` never builds a billion modules;
3. the model is built on the ``meta`` device (shapes only, no memory) and its state dict compared with the
   header: missing and extra tensors, shapes, and dtypes. A shape that disagrees is reported with the config
   key that set it when one can be found, e.g. ``ffn_dim is 512 but model.safetensors holds
   encoder.layers.0.ffn.fc1.weight with shape (768, 192)``.

Only then does :func:`seqattn.models.io.load_model` build the real model and load the weights.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch

# safetensors dtype names -> (bytes per element, floating point?)
SAFETENSORS_DTYPES = {
    "F64": (8, True), "F32": (4, True), "F16": (2, True), "BF16": (2, True), "F8_E4M3": (1, True),
    "F8_E5M2": (1, True), "I64": (8, False), "I32": (4, False), "I16": (2, False), "I8": (1, False),
    "U8": (1, False), "BOOL": (1, False),
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


class WeightsMismatch(ValueError):
    """config.json and model.safetensors disagree; the message says where."""


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` from a safetensors file's header, without reading any tensor data.
    The header's offsets are checked against the file's size, so a truncated file fails here (WeightsMismatch,
    whose message the caller prefixes with the file)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise WeightsMismatch(f"not a safetensors file ({size} bytes, shorter than its header)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise WeightsMismatch(f"not a safetensors file, or truncated (a header of {length} bytes in a file of "
                                  f"{size})")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise WeightsMismatch(f"the safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise WeightsMismatch("the safetensors header is not a JSON object")
    tensors, data_bytes = {}, size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
            width = SAFETENSORS_DTYPES[dtype][0]
        except (KeyError, TypeError, ValueError):
            raise WeightsMismatch(f"the header entry of tensor {name!r} is malformed: {entry!r}"[:300]) from None
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * width or begin < 0:
            raise WeightsMismatch(f"tensor {name} ({dtype}, shape {shape}) has data offsets {begin}..{end}, "
                                  f"not {numel * width} bytes")
        if end > data_bytes:
            raise WeightsMismatch(f"truncated: tensor {name} ends at byte {end} of the data, which holds "
                                  f"{data_bytes}")
        tensors[name] = (dtype, shape)
    return tensors


def layer_count(names, pattern: str) -> int:
    """How many numbered layers (``pattern`` with one group, the index) the tensor names hold."""
    indices = {int(m.group(1)) for m in (re.match(pattern, name) for name in names) if m}
    return max(indices) + 1 if indices else 0


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """``{alias name: first name}`` of parameters and buffers that are one tensor under several names (tied
    embeddings), saved once under the first name. Found by identity, so it works on the meta device too."""
    first, aliases = {}, {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def tied_names(model: torch.nn.Module) -> set[str]:
    """The state-dict names that are aliases of an earlier one (not saved)."""
    return set(tied_aliases(model))


# An attention config's settings for a kind of head it has none of cannot have made any shape.
def _config_ints(config: dict, prefix: str = "") -> dict[str, int]:
    """Every integer value of a (nested) config as ``{dotted key: value}``, less the settings of head kinds an
    attention config has no heads of (a section whose ``heads`` is 0)."""
    found = {}
    for key, value in config.items():
        if isinstance(value, dict):
            if value.get("heads") != 0:
                found.update(_config_ints(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool):
            found[prefix + key] = value
    return found


def _shape_message(name, expected, actual, config: dict, config_name: str, weights_name: str) -> str:
    """Name the config key behind a shape that disagrees: the integer settings (at most three) whose value
    is the size the config makes."""
    expected, actual = tuple(expected), tuple(actual)
    if len(expected) == len(actual):
        for want, have in zip(expected, actual):
            if want != have:
                keys = [key for key, value in _config_ints(config).items() if value == want]
                if 1 <= len(keys) <= 3:  # the settings that could have made this size
                    return (f"{' or '.join(keys)} is {want} but {weights_name} holds {name} with shape {actual} "
                            f"(the config makes it {expected})")
                break
    return f"{config_name} makes {name} {expected} but {weights_name} holds it with shape {actual}"


TORCH_TO_SAFETENSORS = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                        torch.uint8: "U8", torch.bool: "BOOL"}


def describe_state(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A state dict in the form of :func:`read_safetensors_header`, to check weights that came from elsewhere."""
    return {name: (TORCH_TO_SAFETENSORS.get(tensor.dtype, "F32"), tuple(tensor.shape)) for name,
            tensor in state.items()}


def check_weights(skeleton: torch.nn.Module, tensors: dict, config: dict, config_name: str = "config.json",
                  weights_name: str = "model.safetensors", optional: frozenset[str] = frozenset()) -> None:
    """Compare a (meta) model's state dict with a safetensors header; raise WeightsMismatch on the first
    disagreement worth reading: missing tensors (other than ``optional`` ones), unexpected ones, then shapes,
    then dtypes."""
    tied = tied_names(skeleton)
    expected = {name: tensor for name, tensor in skeleton.state_dict(keep_vars=True).items()
                if name not in tied and (name in tensors or name not in optional)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected) - tied)
    if missing:
        raise WeightsMismatch(f"{weights_name} lacks {len(missing)} tensor(s) that {config_name} asks for: "
                              f"{', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        raise WeightsMismatch(f"{weights_name} holds {len(unexpected)} tensor(s) that {config_name} does not build: "
                              f"{', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else ""))
    for name, tensor in expected.items():
        dtype, shape = tensors[name]
        if tuple(tensor.shape) != shape:
            raise WeightsMismatch(_shape_message(name, tensor.shape, shape, config, config_name, weights_name))
        floating = SAFETENSORS_DTYPES[dtype][1]
        if floating != tensor.dtype.is_floating_point:
            kind = "floating-point" if tensor.dtype.is_floating_point else "integer"
            raise WeightsMismatch(f"{weights_name} holds {name} as {dtype}, but the model needs {kind} values "
                                  f"({str(tensor.dtype).replace('torch.', '')})")
