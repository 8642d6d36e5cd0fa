"""Convolutions on the CPU through a current oneDNN, called from NumPy with ctypes.

MindSpore 2.10's bundled oneDNN hands plain NCHW tensors to a GEMM convolution (capped at AVX2: on
AVX-512 it would pick a scalar reference kernel), 2.4-3.4x slower than PyTorch's forward+backward.
oneDNN 3.2 from PyPI (`onednn-cpu-gomp`, CPU-only, GNU OpenMP threads) lets each primitive choose a
blocked layout and its direct AVX-512 kernels; plain NCHW arrays are reordered in and out around it.
`imbsam.models` wraps these kernels in MindSpore custom operators.

The library is loaded by path with RTLD_LOCAL: MindSpore's own copy has the same soname
(libdnnl.so.3), and each copy must keep its own symbols and its own ISA cap.
"""

import ctypes
import functools
import importlib.metadata
import os

import numpy as np

from imbsam.device import ONEDNN_ISA_ENV, USER_ENVIRONMENT

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
    """One argument of a primitive: the user's plain array, and the layout the primitive chose.
    When the two differ, a reorder copies between the array and a buffer the library owns."""

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

    Primitives and buffers are built once per shape; every call reorders the plain arrays it is given
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

    def _call(self, name, arrays):
        primitive, operands, reorders, out_reorder, (out_name, out_shape) = self.passes[name]
        result = np.empty(out_shape, np.float32)
        lib = _library()
        # Kept referenced until the primitive has run: oneDNN reads them through raw pointers.
        arrays = [np.ascontiguousarray(array, np.float32) for array in arrays]
        for arg, array in zip(reorders, arrays):
            op = operands[arg]
            _check(lib.dnnl_memory_set_data_handle(op.user, array.ctypes.data), "dnnl_memory_set_data_handle")
            if reorders[arg] is not None:
                _run(reorders[arg], [(_ARG["src"], op.user), (_ARG["dst"], op.memory)])
        out = operands[out_name]
        _check(lib.dnnl_memory_set_data_handle(out.user, result.ctypes.data), "dnnl_memory_set_data_handle")
        _run(primitive, [(_ARG[arg], op.memory) for arg, op in operands.items()])
        if out_reorder is not None:
            _run(out_reorder, [(_ARG["src"], out.memory), (_ARG["dst"], out.user)])
        _check(lib.dnnl_stream_wait(_engine_and_stream()[1]), "dnnl_stream_wait")
        return result

    def forward(self, x, w):
        return self._call("forward", (x, w))

    def input_grad(self, dy, w):
        return self._call("input_grad", (dy, w))

    def weight_grad(self, x, dy):
        return self._call("weight_grad", (x, dy))


@functools.cache
def convolution(x_shape, w_shape, stride, padding):
    """The Convolution for these shapes, built on first use and shared by every layer of that shape."""
    return Convolution(x_shape, w_shape, stride, padding)


def available():
    """Whether the library loads here; the reason if not."""
    try:
        _engine_and_stream()
    except (OneDNNError, OSError) as error:
        return False, str(error)
    return True, ""


def _output_shape(x, w, stride, padding):
    return [x[0], w[0], (x[2] + 2 * padding - w[2]) // stride + 1, (x[3] + 2 * padding - w[3]) // stride + 1]


def _first_dtype(first, *_):
    return first


@functools.cache
def conv2d_operator(stride, padding):
    """A MindSpore custom operator (x, w) -> y running these kernels, with its gradient as two more.

    "pyfunc" operators run on the CPU in PyNative and graph mode. The gradient operators take x and w
    only for their shapes where they do not need their values: a stride-2 output fits two input sizes."""
    from mindspore import ops

    def forward(x, w):
        return convolution(x.shape, w.shape, stride, padding).forward(x, w)

    def input_grad(x, dy, w):
        return convolution(x.shape, w.shape, stride, padding).input_grad(dy, w)

    def weight_grad(x, dy, w):
        return convolution(x.shape, w.shape, stride, padding).weight_grad(x, dy)

    input_grad_op = ops.Custom(input_grad, lambda x, dy, w: x, _first_dtype, "pyfunc")
    weight_grad_op = ops.Custom(weight_grad, lambda x, dy, w: w, _first_dtype, "pyfunc")

    def bprop(x, w, out, dout):
        return input_grad_op(x, dout, w), weight_grad_op(x, dout, w)

    return ops.Custom(forward, lambda x, w: _output_shape(x, w, stride, padding), _first_dtype, "pyfunc",
                      bprop=bprop)
