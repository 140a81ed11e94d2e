// ggml's mul_mat as llama.cpp runs it in a decode, for bench/kernels.py: the weights in the CPU backend's
// CPU_REPACK buffer type (an "extra" buffer type: at upload, ggml rewrites a tensor it has a repacked kernel for
// into interleaved row groups, e.g. q4_0 -> q4_0x8, and its mul_mat then runs a gemv over the interleaved rows),
// a graph computed by the CPU backend. Built into the same library as ggml_ref.c (needs llama-cpp-python's headers).
//
// A call computes one graph of `per_graph` matvecs (the same x through consecutive weight copies), so the graph's
// fixed cost (planning, thread start) is spread as it is over a decode step's many matrices.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

typedef struct {
    struct ggml_context* ctx;
    ggml_backend_t backend;
    ggml_backend_buffer_t wbuf, abuf;
    struct ggml_tensor* x;
    struct ggml_cgraph** graphs;
    struct ggml_tensor** y;
    int n_graphs, per_graph, repacked;
    int64_t rows;
} repack_bench;

// Types in bench/kernels.py's order (ggml_ref.c's enum).
static const enum ggml_type TYPES[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0};

static ggml_backend_dev_t cpu_dev(void) { return ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0); }

static ggml_backend_buffer_type_t cpu_repack_buft(void) {
    ggml_backend_dev_get_extra_bufts_t get = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(
        ggml_backend_cpu_reg(), "ggml_backend_dev_get_extra_bufts");
    if (!get) return NULL;
    for (ggml_backend_buffer_type_t* b = get(cpu_dev()); b && *b; ++b)
        if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) return *b;
    return NULL;
}

// Whether ggml has a repacked mul_mat for these weights, asked as llama.cpp asks before placing a weight in an
// extra buffer type: the op with its weight in an empty buffer of that type (a weight it cannot repack must stay
// in the plain CPU buffer: uploading it into CPU_REPACK would crash).
static int repack_supported(ggml_backend_buffer_type_t buft, enum ggml_type type, int64_t rows, int64_t cols) {
    struct ggml_init_params params = {3 * ggml_tensor_overhead(), NULL, true};
    struct ggml_context* ctx = ggml_init(params);
    struct ggml_tensor* w = ggml_new_tensor_2d(ctx, type, cols, rows);
    struct ggml_tensor* op = ggml_mul_mat(ctx, w, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, 1));
    ggml_backend_buffer_t empty = ggml_backend_buft_alloc_buffer(buft, 0);
    w->buffer = empty;
    const int ok = ggml_backend_dev_supports_op(cpu_dev(), op);
    ggml_backend_buffer_free(empty);
    ggml_free(ctx);
    return ok;
}

void repack_close(repack_bench* b) {
    if (!b) return;
    if (b->wbuf) ggml_backend_buffer_free(b->wbuf);
    if (b->abuf) ggml_backend_buffer_free(b->abuf);
    if (b->backend) ggml_backend_free(b->backend);
    if (b->ctx) ggml_free(b->ctx);
    free(b->graphs);
    free(b->y);
    free(b);
}

// copies weight matrices (rows x cols of `type`, each `w_bytes` long, w_bytes apart in w) uploaded into CPU_REPACK
// where ggml has a repacked kernel for them, else into the plain CPU buffer (what llama.cpp does); NULL when this
// ggml has no CPU_REPACK buffer type. repack_is_repacked() says which.
static void quiet(enum ggml_log_level level, const char* text, void* user) {
    (void)level, (void)text, (void)user;  // ggml logs every tensor it repacks
}

repack_bench* repack_open(int type, int64_t rows, int64_t cols, const uint8_t* w, size_t w_bytes, int copies,
                          int per_graph, int threads) {
    ggml_log_set(quiet, NULL);
    ggml_backend_buffer_type_t buft = cpu_repack_buft();
    if (!buft || copies % per_graph) return NULL;
    repack_bench* b = calloc(1, sizeof *b);
    b->n_graphs = copies / per_graph;
    b->per_graph = per_graph;
    b->rows = rows;
    b->graphs = calloc(b->n_graphs, sizeof *b->graphs);
    b->y = calloc(copies, sizeof *b->y);
    const size_t mem = (size_t)(2 * copies + 8) * ggml_tensor_overhead() +
                       (size_t)b->n_graphs * ggml_graph_overhead_custom(2 * per_graph + 2, false);
    struct ggml_init_params params = {mem, NULL, true};
    b->ctx = ggml_init(params);
    struct ggml_tensor** wt = calloc(copies, sizeof *wt);
    for (int i = 0; i < copies; ++i) wt[i] = ggml_new_tensor_2d(b->ctx, TYPES[type], cols, rows);
    if (!repack_supported(buft, TYPES[type], rows, cols)) buft = ggml_backend_cpu_buffer_type();  // as llama.cpp
    b->wbuf = ggml_backend_alloc_ctx_tensors_from_buft(b->ctx, buft);  // the weights only: nothing else yet
    b->x = ggml_new_tensor_2d(b->ctx, GGML_TYPE_F32, cols, 1);
    for (int g = 0; g < b->n_graphs; ++g) {
        b->graphs[g] = ggml_new_graph_custom(b->ctx, 2 * per_graph + 2, false);
        for (int j = 0; j < per_graph; ++j) {
            const int i = g * per_graph + j;
            b->y[i] = ggml_mul_mat(b->ctx, wt[i], b->x);
            ggml_build_forward_expand(b->graphs[g], b->y[i]);
        }
    }
    b->abuf = ggml_backend_alloc_ctx_tensors_from_buft(b->ctx, ggml_backend_cpu_buffer_type());
    b->backend = ggml_backend_cpu_init();
    if (!b->wbuf || !b->abuf || !b->backend) {
        free(wt);
        repack_close(b);
        return NULL;
    }
    ggml_backend_cpu_set_n_threads(b->backend, threads);
    for (int i = 0; i < copies; ++i) ggml_backend_tensor_set(wt[i], w + (size_t)i * w_bytes, 0, w_bytes);
    b->repacked = buft != ggml_backend_cpu_buffer_type() && wt[0]->extra != NULL;  // the repacked kernel's traits
    free(wt);
    return b;
}

int repack_is_repacked(const repack_bench* b) { return b->repacked; }

int repack_graphs(const repack_bench* b) { return b->n_graphs; }

// Graph g: y_j = W_(g * per_graph + j) x for its per_graph copies; y gets the first one's rows.
int repack_run(repack_bench* b, int g, const float* x, int64_t cols, float* y) {
    ggml_backend_tensor_set(b->x, x, 0, (size_t)cols * sizeof(float));
    if (ggml_backend_graph_compute(b->backend, b->graphs[g]) != GGML_STATUS_SUCCESS) return 0;
    ggml_backend_tensor_get(b->y[g * b->per_graph], y, 0, (size_t)b->rows * sizeof(float));
    return 1;
}
