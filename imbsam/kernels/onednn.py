"""Convolutions on the CPU through a current oneDNN, driven through its C API with ctypes.

MindSpore 2.10's bundled oneDNN hands plain NCHW tensors to a GEMM convolution (capped at AVX2: on
AVX-512 it would pick a scalar reference kernel), 2-3x slower than PyTorch's forward+backward.
oneDNN 3.2 from PyPI (`onednn-cpu-gomp`, CPU-only, GNU OpenMP threads) lets each primitive choose a
blocked layout and its direct AVX-512 kernels; plain NCHW buffers are reordered in and out around it.
`conv2d_operator` makes them MindSpore custom operators, which imbsam.models' Conv2d calls.

The library is loaded by path with RTLD_LOCAL: MindSpore's own copy has the same soname
(libdnnl.so.3), and each copy must keep its own symbols and its own ISA cap.
"""

import ctypes
import functools
import importlib.metadata
import os
import sys
import threading
from pathlib import Path

import numpy as np

from imbsam.kernels import native
from imbsam.kernels.environment import ONEDNN_ISA_ENV, USER_ENVIRONMENT

DISTRIBUTION = "onednn-cpu-gomp"
LIBRARY = "libdnnl.so.3"

# Enumerators of oneDNN 3.2's C API (dnnl_types.h, dnnl_common_types.h).
_CPU_ENGINE, _IN_ORDER_STREAM, _F32, _ANY_LAYOUT, _ISA_DEFAULT = 1, 1, 3, 1, 0
_FORWARD_TRAINING, _BACKWARD_DATA, _BACKWARD_WEIGHTS, _DIRECT = 64, 160, 192, 1
_QUERY = {"src": 129, "diff_src": 130, "weights": 131, "diff_weights": 132, "dst": 133, "diff_dst": 134}
_ARG = {"src": 1, "dst": 17, "weights": 33, "diff_src": 129, "diff_dst": 145, "diff_weights": 161}
_ALLOCATE = ctypes.c_void_p(-1)  # DNNL_MEMORY_ALLOCATE: the library owns the buffer


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class OneDNNError(RuntimeError):
    """The oneDNN library is missing or refused a call."""


def library_path():
    """Where pip put libdnnl.so.3 of `onednn-cpu-gomp` (a data file, so under the environment's lib/)."""
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise OneDNNError(f"{DISTRIBUTION} is not installed: pip install -r requirements.lock") from None
    for file in files:
        if file.name == LIBRARY:
            return str(file.locate())
    raise OneDNNError(f"{DISTRIBUTION} is installed without {LIBRARY}: reinstall it")


@functools.cache
def _library():
    lib = ctypes.CDLL(library_path(), mode=os.RTLD_LOCAL)
    for name in dir(_Api):
        if not name.startswith("_"):
            function = getattr(lib, name)
            function.argtypes, function.restype = getattr(_Api, name)
    if USER_ENVIRONMENT[ONEDNN_ISA_ENV] is None:
        # ONEDNN_MAX_CPU_ISA=AVX2 in this environment is imbsam's workaround for MindSpore's copy; this
        # copy must not read it. Setting the cap before the first primitive overrides the variable.
        _check(lib.dnnl_set_max_cpu_isa(_ISA_DEFAULT), "dnnl_set_max_cpu_isa")
    return lib


class _Api:
    """argtypes and restype of each C function used; handles are opaque pointers."""

    _p, _pp, _dims = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64)
    dnnl_set_max_cpu_isa = [ctypes.c_int], ctypes.c_int
    dnnl_get_effective_cpu_isa = [], ctypes.c_int
    dnnl_engine_create = [_pp, ctypes.c_int, ctypes.c_size_t], ctypes.c_int
    dnnl_stream_create = [_pp, _p, ctypes.c_uint], ctypes.c_int
    dnnl_stream_wait = [_p], ctypes.c_int
    dnnl_memory_desc_create_with_strides = [_pp, ctypes.c_int, _dims, ctypes.c_int, _dims], ctypes.c_int
    dnnl_memory_desc_create_with_tag = [_pp, ctypes.c_int, _dims, ctypes.c_int, ctypes.c_int], ctypes.c_int
    dnnl_memory_desc_equal = [_p, _p], ctypes.c_int
    dnnl_convolution_forward_primitive_desc_create = (
        [_pp, _p, ctypes.c_int, ctypes.c_int, _p, _p, _p, _p, _dims, _dims, _dims, _dims, _p], ctypes.c_int)
    dnnl_convolution_backward_data_primitive_desc_create = (
        [_pp, _p, ctypes.c_int, _p, _p, _p, _dims, _dims, _dims, _dims, _p, _p], ctypes.c_int)
    dnnl_convolution_backward_weights_primitive_desc_create = (
        [_pp, _p, ctypes.c_int, _p, _p, _p, _p, _dims, _dims, _dims, _dims, _p, _p], ctypes.c_int)
    dnnl_reorder_primitive_desc_create = [_pp, _p, _p, _p, _p, _p], ctypes.c_int
    dnnl_primitive_desc_query_md = [_p, ctypes.c_int, ctypes.c_int], _p
    dnnl_primitive_create = [_pp, _p], ctypes.c_int
    dnnl_memory_create = [_pp, _p, _p, _p], ctypes.c_int
    dnnl_memory_set_data_handle = [_p, _p], ctypes.c_int
    dnnl_primitive_execute = [_p, _p, ctypes.c_int, ctypes.POINTER(_ExecArg)], ctypes.c_int


def _check(status, call):
    if status != 0:
        raise OneDNNError(f"oneDNN's {call} failed with status {status}")


def _create(function, *args):
    handle = ctypes.c_void_p()
    _check(getattr(_library(), function)(ctypes.byref(handle), *args), function)
    return handle


def _dims(values):
    return (ctypes.c_int64 * len(values))(*values)


@functools.cache
def _engine_and_stream():
    engine = _create("dnnl_engine_create", _CPU_ENGINE, 0)
    return engine, _create("dnnl_stream_create", engine, _IN_ORDER_STREAM)


class _Operand:
    """One argument of a primitive: the caller's plain buffer, and the layout the primitive chose.
    When the two differ, a reorder copies between it and a buffer the library owns."""

    def __init__(self, shape, primitive_desc, query):
        lib, (engine, _) = _library(), _engine_and_stream()
        strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
        self.plain = _create("dnnl_memory_desc_create_with_strides", len(shape), _dims(shape), _F32,
                             _dims(strides.tolist()))
        self.user = _create("dnnl_memory_create", self.plain, engine, None)
        self.chosen = lib.dnnl_primitive_desc_query_md(primitive_desc, _QUERY[query], 0)
        self.reordered = not lib.dnnl_memory_desc_equal(self.chosen, self.plain)
        self.memory = _create("dnnl_memory_create", self.chosen, engine, _ALLOCATE) if self.reordered else self.user

    def reorder_between(self, source, destination):
        engine, _ = _engine_and_stream()
        desc = _create("dnnl_reorder_primitive_desc_create", source, engine, destination, engine, None)
        return _create("dnnl_primitive_create", desc)


def _run(primitive, args):
    _, stream = _engine_and_stream()
    packed = (_ExecArg * len(args))(*(_ExecArg(arg, memory) for arg, memory in args))
    _check(_library().dnnl_primitive_execute(primitive, stream, len(args), packed), "dnnl_primitive_execute")


class Convolution:
    """Forward, input gradient and weight gradient of one convolution shape (NCHW float32, no bias).

    Primitives and buffers are built once per shape; every call reorders the plain buffers it is given
    into the chosen layouts and its result back."""

    def __init__(self, x_shape, w_shape, stride, padding):
        n, _, h, w = x_shape
        out_channels, _, kh, kw = w_shape
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.y_shape = (n, out_channels, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1)
        engine, _ = _engine_and_stream()
        any_ = {name: _create("dnnl_memory_desc_create_with_tag", 4, _dims(shape), _F32, _ANY_LAYOUT)
                for name, shape in (("x", self.x_shape), ("w", self.w_shape), ("y", self.y_shape))}
        geometry = (_dims([stride, stride]), _dims([0, 0]), _dims([padding, padding]), _dims([padding, padding]))
        self.forward_desc = _create("dnnl_convolution_forward_primitive_desc_create", engine, _FORWARD_TRAINING,
                                    _DIRECT, any_["x"], any_["w"], None, any_["y"], *geometry, None)
        data_desc = _create("dnnl_convolution_backward_data_primitive_desc_create", engine, _DIRECT, any_["x"],
                            any_["w"], any_["y"], *geometry, self.forward_desc, None)
        weights_desc = _create("dnnl_convolution_backward_weights_primitive_desc_create", engine, _DIRECT,
                               any_["x"], any_["w"], None, any_["y"], *geometry, self.forward_desc, None)
        self.passes = {
            "forward": self._pass(self.forward_desc, {"src": self.x_shape, "weights": self.w_shape},
                                  ("dst", self.y_shape)),
            "input_grad": self._pass(data_desc, {"diff_dst": self.y_shape, "weights": self.w_shape},
                                     ("diff_src", self.x_shape)),
            "weight_grad": self._pass(weights_desc, {"src": self.x_shape, "diff_dst": self.y_shape},
                                      ("diff_weights", self.w_shape)),
        }

    @staticmethod
    def _pass(desc, inputs, output):
        """(primitive, [(operand, reorder into it)], (operand, reorder out of it), output shape)."""
        operands = {name: _Operand(shape, desc, name) for name, shape in (*inputs.items(), output)}
        reorders = {name: op.reorder_between(op.plain, op.chosen) if op.reordered else None
                    for name, op in operands.items() if name != output[0]}
        out = operands[output[0]]
        out_reorder = out.reorder_between(out.chosen, out.plain) if out.reordered else None
        return _create("dnnl_primitive_create", desc), operands, reorders, out_reorder, output

    def run(self, name, inputs, output):
        """Run pass `name` ("forward", "input_grad", "weight_grad") on plain NCHW / OIHW float32 buffers
        given as addresses: `inputs` in the order of self.passes[name]'s inputs, then its output."""
        primitive, operands, reorders, out_reorder, (out_name, _) = self.passes[name]
        lib = _library()
        for arg, address in zip(reorders, inputs):
            op = operands[arg]
            _check(lib.dnnl_memory_set_data_handle(op.user, address), "dnnl_memory_set_data_handle")
            if reorders[arg] is not None:
                _run(reorders[arg], [(_ARG["src"], op.user), (_ARG["dst"], op.memory)])
        out = operands[out_name]
        _check(lib.dnnl_memory_set_data_handle(out.user, output), "dnnl_memory_set_data_handle")
        _run(primitive, [(_ARG[arg], op.memory) for arg, op in operands.items()])
        if out_reorder is not None:
            _run(out_reorder, [(_ARG["src"], out.memory), (_ARG["dst"], out.user)])
        _check(lib.dnnl_stream_wait(_engine_and_stream()[1]), "dnnl_stream_wait")


@functools.cache
def convolution(x_shape, w_shape, stride, padding):
    """The Convolution for these shapes, built on first use and shared by every layer of that shape."""
    return Convolution(tuple(x_shape), tuple(w_shape), stride, padding)


# ---- MindSpore custom operators: "aot" kernels (onednn_shim.c) that call back into Python ----

SHIM_SOURCE = Path(__file__).with_name("onednn_shim.c")
STRIDES = (1, 2)  # the entry points onednn_shim.c defines
_PASSES = ("forward", "input_grad", "weight_grad")
_ENTRY_POINTS = ("ConvForward", "ConvInputGrad", "ConvWeightGrad")
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)))


# Layers of one shape share their primitives and memory objects, and MindSpore's runtime may launch
# independent kernels (a layer's two gradients) from different threads: one pass at a time.
_one_at_a_time = threading.Lock()


def _kernel(kind, nparam, params, shapes):
    """Every entry point's Python side: (x, w) -> y, (x, dy, w) -> dx, (x, dy, w) -> dw on MindSpore's buffers.
    x and w reach the gradients for their shapes even where their values are not read; padding is
    kernel_size // 2, as imbsam.models.Conv2d has it."""
    try:
        stride, name = kind & 0xF, _PASSES[kind >> 4]
        x_shape, w_shape = tuple(shapes[0][:4]), tuple(shapes[nparam - 2][:4])
        conv = convolution(x_shape, w_shape, stride, w_shape[2] // 2)
        if name == "forward":
            x, w, out = (params[i] for i in range(3))
            inputs = (x, w)
        else:
            x, dy, w, out = (params[i] for i in range(4))
            inputs = (dy, w) if name == "input_grad" else (x, dy)
        with _one_at_a_time:
            conv.run(name, inputs, out)
        return 0
    except Exception as error:  # noqa: BLE001 - MindSpore only sees the status: print the reason here
        print(f"imbsam.kernels.onednn: {kind:#x} failed: {error!r}", file=sys.stderr)
        return 1


_callback = _CALLBACK(_kernel)  # module-level: the C side keeps only the pointer


@functools.cache
def shim_path():
    """onednn_shim.c built (imbsam.kernels.native), its entry points calling back into `_kernel`."""
    path = native.build(SHIM_SOURCE.name)
    ctypes.CDLL(path).imbsam_set_callback(_callback)
    return path


def available():
    """Whether the library loads and the shim builds here; the reason if not."""
    try:
        _engine_and_stream()
        shim_path()
    except (OneDNNError, native.BuildError, OSError) as error:
        return False, str(error)
    return True, ""


def _output_shape(x, w, stride):
    padding = w[2] // 2
    return [x[0], w[0], (x[2] + 2 * padding - w[2]) // stride + 1, (x[3] + 2 * padding - w[3]) // stride + 1]


def _first_dtype(first, *_):
    return first


def _third_shape(x, dy, w):
    return w


def _first_shape(x, dy, w):
    return x


@functools.cache
def conv2d_operator(stride):
    """A MindSpore custom operator (x, w) -> y on these kernels, padded by kernel_size // 2, with its
    gradient as two more. "aot" operators run on the CPU in PyNative and graph mode."""
    from mindspore import ops

    if stride not in STRIDES:
        raise OneDNNError(f"no entry point for stride {stride}: add one to {SHIM_SOURCE.name}")
    entry = {name: f"{shim_path()}:{point}{stride}" for name, point in zip(_PASSES, _ENTRY_POINTS)}
    input_grad = ops.Custom(entry["input_grad"], _first_shape, _first_dtype, "aot")
    weight_grad = ops.Custom(entry["weight_grad"], _third_shape, _first_dtype, "aot")

    def bprop(x, w, out, dout):
        return input_grad(x, dout, w), weight_grad(x, dout, w)

    return ops.Custom(entry["forward"], lambda x, w: _output_shape(x, w, stride), _first_dtype, "aot", bprop=bprop)
