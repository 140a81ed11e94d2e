// Quantized matrix products over a thread pool: activations are quantized once, rows split across threads.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "floe/kernels.h"
#include "floe/threadpool.h"

namespace floe {

// One weight matrix applied to the shared input: Y[c][r] = sum_k X[c][k] * W[r][k], written at y[c * ldy + r].
struct MatmulJob {
    QType type;      // weight type
    const void* w;   // rows x cols, row-major ggml blocks (as in GGUF)
    int64_t rows;
    float* y;
    size_t ldy;
};

// Several products of the same input X[n][cols] (e.g. Wq, Wk, Wv) in one pass over the pool: X is quantized
// once per activation format needed, and the jobs' rows are split evenly across threads.
// scratch holds the quantized activations; it grows as needed and is reused across calls.
void matmul_jobs(const Kernels& k, const MatmulJob* jobs, int n_jobs, int64_t cols, const float* x, int n,
                 ThreadPool& pool, std::vector<uint8_t>& scratch);

// Y[n][rows] = X[n][cols] * W^T, W: rows x cols of type wt.
void matmul(const Kernels& k, QType wt, const void* w, int64_t rows, int64_t cols, const float* x, int n,
            float* y, ThreadPool& pool, std::vector<uint8_t>& scratch);

// Throws std::invalid_argument unless cols fits wt's block size and wt has a weight kernel.
void check_matmul_shape(QType wt, int64_t rows, int64_t cols);

}  // namespace floe
