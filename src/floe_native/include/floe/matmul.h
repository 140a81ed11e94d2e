// Quantized matrix products over a thread pool: activations are quantized once, rows split across threads.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "floe/kernels.h"
#include "floe/threadpool.h"

namespace floe {

// Y[n][rows] = X[n][cols] * W^T, W: rows x cols of type wt (row-major blocks, as in GGUF).
// scratch holds the quantized activations; it grows as needed and can be reused across calls.
void matmul(const Kernels& k, QType wt, const void* w, int64_t rows, int64_t cols, const float* x, int n,
            float* y, ThreadPool& pool, std::vector<uint8_t>& scratch);

// Throws std::invalid_argument unless cols fits wt's block size and wt has a weight kernel.
void check_matmul_shape(QType wt, int64_t rows, int64_t cols);

}  // namespace floe
