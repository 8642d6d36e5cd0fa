/* MindSpore "aot" custom-operator entry points for imbsam.kernels.onednn.
 *
 * MindSpore calls an aot kernel with its own input and output buffers, which a "pyfunc" kernel would
 * copy into per-call-site host tensors it keeps (about 4 activations per convolution and graph).
 * These entry points hand the buffers and their shapes, uncopied, to the Python function that
 * imbsam.kernels.onednn registers. kind = 16 * pass + stride; pass 0 forward, 1 input gradient, 2 weight gradient.
 */
#include <stdint.h>

typedef int (*imbsam_callback)(int kind, int nparam, void **params, int64_t **shapes);

static imbsam_callback callback;

void imbsam_set_callback(imbsam_callback function) { callback = function; }

#define ENTRY(name, kind)                                                                           \
    int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,          \
             void *stream, void *extra) {                                                           \
        (void)ndims, (void)dtypes, (void)stream, (void)extra;                                       \
        return callback ? callback(kind, nparam, params, shapes) : 1;                               \
    }

ENTRY(ConvForward1, 0x01)
ENTRY(ConvForward2, 0x02)
ENTRY(ConvInputGrad1, 0x11)
ENTRY(ConvInputGrad2, 0x12)
ENTRY(ConvWeightGrad1, 0x21)
ENTRY(ConvWeightGrad2, 0x22)
