#include "fm/fm_tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fm_tensor_set_shape(fm_tensor *t, int ndim, const int *shape)
{
    FM_ASSERT(ndim >= 1 && ndim <= FM_MAX_DIMS);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < FM_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        FM_ASSERT(t->shape[i] > 0);
        if (i < ndim) t->numel *= t->shape[i];
    }
}

static size_t dtype_size(fm_dtype dtype) { return dtype == FM_I64 ? sizeof(int64_t) : sizeof(float); }

fm_tensor *fm_tensor_new(fm_dtype dtype, int ndim, const int *shape)
{
    fm_tensor *t = fm_xcalloc(1, sizeof *t);
    t->dtype = dtype;
    fm_tensor_set_shape(t, ndim, shape);
    size_t bytes = (size_t)t->numel * dtype_size(dtype);
    t->data = fm_xaligned(bytes);
    memset(t->data, 0, bytes);
    return t;
}

void fm_tensor_free(fm_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t->grad);
    free(t);
}

bool fm_tensor_same_shape(const fm_tensor *a, const fm_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *fm_tensor_shape_str(const fm_tensor *t, char *buf, size_t len)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, i ? ", %d" : "%d", t->shape[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
    return buf;
}
