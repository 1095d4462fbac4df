/* The graph of one evaluation-mode forward pass as an ONNX model (opset 13,
 * the batch dimension symbolic), encoded by protobuf-c with the messages
 * protoc-c generates from onnx.proto.  Every core op the reference models
 * use has a mapping; dropout, the identity in evaluation, is left out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <onnx/onnx.pb-c.h>

#include "cli.h"
#include "fm/fm_io.h"
#include "fm_internal.h"

#define ONNX_OPSET 13

/* Everything of one export lives in one arena, freed at the end. */
typedef struct onnx_builder {
    fm_arena *arena;
    Onnx__GraphProto *graph;
    int cap_node, cap_init;
    /* the ONNX value name of each tensor seen: op outputs, leaves */
    const fm_tensor **tensors;
    const char **names;
    int n_names, cap_names;
    int n_consts;
} onnx_builder;

static char *b_strdup(onnx_builder *b, const char *s)
{
    size_t len = strlen(s) + 1;
    return memcpy(fm_arena_alloc(b->arena, len), s, len);
}

static void *b_new(onnx_builder *b, size_t size) { return fm_arena_calloc(b->arena, size); }

static const char *name_of(const onnx_builder *b, const fm_tensor *t)
{
    for (int i = 0; i < b->n_names; i++)
        if (b->tensors[i] == t) return b->names[i];
    return NULL;
}

static void name_set(onnx_builder *b, const fm_tensor *t, const char *name)
{
    if (b->n_names == b->cap_names) {
        b->cap_names = b->cap_names ? 2 * b->cap_names : 64;
        b->tensors = fm_xrealloc(b->tensors, (size_t)b->cap_names * sizeof *b->tensors);
        b->names = fm_xrealloc(b->names, (size_t)b->cap_names * sizeof *b->names);
    }
    b->tensors[b->n_names] = t;
    b->names[b->n_names++] = name;
}

static void add_initializer(onnx_builder *b, const fm_tensor *t, const char *name)
{
    Onnx__TensorProto *tp = b_new(b, sizeof *tp);
    onnx__tensor_proto__init(tp);
    tp->name = b_strdup(b, name);
    tp->n_dims = (size_t)t->ndim;
    tp->dims = b_new(b, (size_t)t->ndim * sizeof *tp->dims);
    for (int d = 0; d < t->ndim; d++) tp->dims[d] = t->shape[d];
    tp->has_data_type = 1;
    tp->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    /* raw_data is little-endian, as fmhost's floats are on every target. */
    tp->has_raw_data = 1;
    tp->raw_data.len = (size_t)t->numel * sizeof(float);
    tp->raw_data.data = (uint8_t *)t->data;
    FM_ASSERT(b->graph->n_initializer < (size_t)b->cap_init);
    b->graph->initializer[b->graph->n_initializer++] = tp;
}

/* The ONNX name of an op's input: an earlier op's output, the graph input,
 * or a leaf (a parameter or buffer under its registered name, any other
 * constant tensor as "const_<k>"), added as an initializer when first met. */
static const char *input_name(onnx_builder *b, const fm_tensor *t)
{
    const char *name = name_of(b, t);
    if (name) return name;
    FM_ASSERT(t->dtype == FM_F32);
    if (t->name) {
        name = b_strdup(b, t->name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "const_%d", b->n_consts++);
        name = b_strdup(b, buf);
    }
    add_initializer(b, t, name);
    name_set(b, t, name);
    return name;
}

static Onnx__AttributeProto *attr_new(onnx_builder *b, const char *name,
                                      Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = b_new(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = b_strdup(b, name);
    a->has_type = 1;
    a->type = type;
    return a;
}

/* n ints, all v. */
static Onnx__AttributeProto *attr_ints(onnx_builder *b, const char *name, int n, int v)
{
    Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)n;
    a->ints = b_new(b, (size_t)n * sizeof *a->ints);
    for (int i = 0; i < n; i++) a->ints[i] = v;
    return a;
}

static Onnx__AttributeProto *attr_int(onnx_builder *b, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
    return a;
}

static Onnx__AttributeProto *attr_float(onnx_builder *b, const char *name, float v)
{
    Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
    return a;
}

/* Appends a node op_type(inputs) -> output with up to 4 attributes. */
static Onnx__NodeProto *add_node(onnx_builder *b, const char *op_type, const char *output,
                                 int n_in, const char *const *inputs)
{
    Onnx__NodeProto *n = b_new(b, sizeof *n);
    onnx__node_proto__init(n);
    char buf[64];
    snprintf(buf, sizeof buf, "%s_%zu", op_type, b->graph->n_node);
    n->name = b_strdup(b, buf);
    n->op_type = b_strdup(b, op_type);
    n->n_input = (size_t)n_in;
    n->input = b_new(b, (size_t)n_in * sizeof *n->input);
    for (int i = 0; i < n_in; i++) n->input[i] = b_strdup(b, inputs[i]);
    n->n_output = 1;
    n->output = b_new(b, sizeof *n->output);
    n->output[0] = b_strdup(b, output);
    n->attribute = b_new(b, 4 * sizeof *n->attribute);
    FM_ASSERT(b->graph->n_node < (size_t)b->cap_node);
    b->graph->node[b->graph->n_node++] = n;
    return n;
}

static void attr_add(Onnx__NodeProto *n, Onnx__AttributeProto *a)
{
    FM_ASSERT(n->n_attribute < 4);
    n->attribute[n->n_attribute++] = a;
}

/* A fresh value name for an intermediate result. */
static const char *value_name(onnx_builder *b, const char *what)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s_%zu", what, b->graph->n_node);
    return b_strdup(b, buf);
}

/* Emits the ONNX nodes of one fmhost node; false (error set) when it has
 * no mapping. */
static bool emit(onnx_builder *b, const fm_node *n, const char *who)
{
    const char *out = value_name(b, "t"), *in[7];
    Onnx__NodeProto *node;
    switch (n->op) {
    case FM_OP_LINEAR: {
        int k = 0;
        in[k++] = input_name(b, n->in[0]);
        in[k++] = input_name(b, n->in[1]);
        if (n->in[2]) in[k++] = input_name(b, n->in[2]);
        node = add_node(b, "Gemm", out, k, in);
        attr_add(node, attr_int(b, "transB", 1));
        break;
    }
    case FM_OP_CONV2D: {
        const fm_tensor *w = n->in[1];
        int k = 0;
        in[k++] = input_name(b, n->in[0]);
        in[k++] = input_name(b, w);
        if (n->in[2]) in[k++] = input_name(b, n->in[2]);
        node = add_node(b, "Conv", out, k, in);
        Onnx__AttributeProto *ks = attr_ints(b, "kernel_shape", 2, w->shape[2]);
        ks->ints[1] = w->shape[3];
        attr_add(node, ks);
        attr_add(node, attr_ints(b, "strides", 2, n->iarg[0]));
        attr_add(node, attr_ints(b, "pads", 4, n->iarg[1]));
        attr_add(node, attr_ints(b, "dilations", 2, 1));
        break;
    }
    case FM_OP_MAXPOOL2D:
    case FM_OP_MAXPOOL2D_RELU: {
        bool relu = n->op == FM_OP_MAXPOOL2D_RELU;
        const char *pooled = relu ? value_name(b, "pooled") : out;
        in[0] = input_name(b, n->in[0]);
        node = add_node(b, "MaxPool", pooled, 1, in);
        attr_add(node, attr_ints(b, "kernel_shape", 2, n->iarg[0]));
        attr_add(node, attr_ints(b, "strides", 2, n->iarg[0]));
        if (relu) add_node(b, "Relu", out, 1, &pooled);
        break;
    }
    case FM_OP_GLOBAL_AVGPOOL: {
        /* ONNX keeps the spatial dimensions, [N, C, 1, 1]; fmhost's is [N, C]. */
        const char *pooled = value_name(b, "pooled");
        in[0] = input_name(b, n->in[0]);
        add_node(b, "GlobalAveragePool", pooled, 1, in);
        node = add_node(b, "Flatten", out, 1, &pooled);
        attr_add(node, attr_int(b, "axis", 1));
        break;
    }
    case FM_OP_BATCHNORM:
    case FM_OP_BATCHNORM_RELU: {
        for (int i = 0; i < 5; i++) in[i] = input_name(b, n->in[i]);
        bool relu = n->op == FM_OP_BATCHNORM_RELU;
        const fm_tensor *residual = relu ? n->in[6] : NULL;
        const char *bn_out = relu ? value_name(b, "bn") : out;
        node = add_node(b, "BatchNormalization", bn_out, 5, in);
        attr_add(node, attr_float(b, "epsilon", n->farg[1]));
        attr_add(node, attr_float(b, "momentum", 1.0f - n->farg[0]));  /* ONNX's convention */
        if (!relu) break;
        const char *sum = bn_out;
        if (residual) {
            sum = value_name(b, "sum");
            add_node(b, "Add", sum, 2, (const char *[]){bn_out, input_name(b, residual)});
        }
        add_node(b, "Relu", out, 1, &sum);
        break;
    }
    case FM_OP_RELU:
        in[0] = input_name(b, n->in[0]);
        add_node(b, "Relu", out, 1, in);
        break;
    case FM_OP_ADD:
        in[0] = input_name(b, n->in[0]);
        in[1] = input_name(b, n->in[1]);
        add_node(b, "Add", out, 2, in);
        break;
    case FM_OP_FLATTEN:
        in[0] = input_name(b, n->in[0]);
        node = add_node(b, "Flatten", out, 1, in);
        attr_add(node, attr_int(b, "axis", 1));
        break;
    case FM_OP_DROPOUT:  /* the identity in evaluation: its output is its input */
        out = input_name(b, n->in[0]);
        break;
    default:
        fm_error_set(FM_ERR_PLUGIN, "plugin %s: its forward pass uses the op '%s', which fmhost "
                     "export has no ONNX mapping for (it maps linear, conv2d, maxpool2d, "
                     "global_avgpool, batchnorm, batchnorm_relu, relu, add, flatten, dropout)",
                     who, fm_op_table[n->op].name);
        return false;
    }
    name_set(b, n->out, out);
    return true;
}

/* A float tensor value [batch, dims...] with the batch named "batch". */
static Onnx__ValueInfoProto *value_info(onnx_builder *b, const char *name, const fm_tensor *t)
{
    Onnx__TensorShapeProto *shape = b_new(b, sizeof *shape);
    onnx__tensor_shape_proto__init(shape);
    shape->n_dim = (size_t)t->ndim;
    shape->dim = b_new(b, (size_t)t->ndim * sizeof *shape->dim);
    for (int d = 0; d < t->ndim; d++) {
        Onnx__TensorShapeProto__Dimension *dim = b_new(b, sizeof *dim);
        onnx__tensor_shape_proto__dimension__init(dim);
        if (d == 0) {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dim->dim_param = b_strdup(b, "batch");
        } else {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim->dim_value = t->shape[d];
        }
        shape->dim[d] = dim;
    }
    Onnx__TypeProto__Tensor *tt = b_new(b, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = shape;
    Onnx__TypeProto *type = b_new(b, sizeof *type);
    onnx__type_proto__init(type);
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    Onnx__ValueInfoProto *v = b_new(b, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = b_strdup(b, name);
    v->type = type;
    return v;
}

static Onnx__StringStringEntryProto *meta_entry(onnx_builder *b, const char *k, const char *v)
{
    Onnx__StringStringEntryProto *e = b_new(b, sizeof *e);
    onnx__string_string_entry_proto__init(e);
    e->key = b_strdup(b, k);
    e->value = b_strdup(b, v);
    return e;
}

fm_status fm_cli_onnx_write(const char *path, const fm_cli_model *cm,
                            const fm_node *const *nodes, int n, const fm_tensor *x,
                            const fm_tensor *logits)
{
    onnx_builder b = {.arena = fm_arena_new(1u << 20)};
    b.graph = b_new(&b, sizeof *b.graph);
    onnx__graph_proto__init(b.graph);
    b.graph->name = b_strdup(&b, cm->name);
    b.cap_node = 3 * n + 1;
    b.cap_init = FM_NODE_MAX_IN * n;
    b.graph->node = b_new(&b, (size_t)b.cap_node * sizeof *b.graph->node);
    b.graph->initializer = b_new(&b, (size_t)b.cap_init * sizeof *b.graph->initializer);
    name_set(&b, x, "input");

    fm_status st = FM_OK;
    for (int i = 0; i < n; i++)
        if (!emit(&b, nodes[i], cm->name)) {
            st = fm_error_status();
            goto done;
        }
    const char *result = name_of(&b, logits);
    if (!result) {
        st = fm_error_set(FM_ERR_PLUGIN, "plugin %s: its logits come from no op of the forward "
                          "pass; there is nothing to export", cm->name);
        goto done;
    }
    /* The graph's output is always called "logits". */
    add_node(&b, "Identity", "logits", 1, &result);

    b.graph->n_input = 1;
    b.graph->input = b_new(&b, sizeof *b.graph->input);
    b.graph->input[0] = value_info(&b, "input", x);
    b.graph->n_output = 1;
    b.graph->output = b_new(&b, sizeof *b.graph->output);
    b.graph->output[0] = value_info(&b, "logits", logits);

    Onnx__OperatorSetIdProto opset;
    onnx__operator_set_id_proto__init(&opset);
    opset.domain = "";
    opset.has_version = 1;
    opset.version = ONNX_OPSET;
    Onnx__OperatorSetIdProto *opsets[] = {&opset};

    char hp[512];
    fm_hparams_to_string(cm->hp, hp, sizeof hp);
    Onnx__StringStringEntryProto *meta[] = {
        meta_entry(&b, "plugin", cm->name),
        meta_entry(&b, "hparams", hp),
        meta_entry(&b, "weights", cm->weights[0] ? cm->weights : "(initial, seed 0)"),
        meta_entry(&b, "input", "[batch, 1, 28, 28]: pixels/255 normalised with mean 0.2860, "
                   "std 0.3530"),
    };

    Onnx__ModelProto model;
    onnx__model_proto__init(&model);
    model.has_ir_version = 1;
    model.ir_version = ONNX__VERSION__IR_VERSION;
    model.n_opset_import = 1;
    model.opset_import = opsets;
    model.producer_name = "fmhost";
    model.producer_version = FM_VERSION_STRING;
    model.graph = b.graph;
    model.n_metadata_props = sizeof meta / sizeof meta[0];
    model.metadata_props = meta;

    size_t len = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = fm_xmalloc(len ? len : 1);
    onnx__model_proto__pack(&model, buf);
    st = fm_file_write_atomic(path, buf, len);
    free(buf);
done:
    free(b.tensors);
    free(b.names);
    fm_arena_free(b.arena);
    return st;
}
