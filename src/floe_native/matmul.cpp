#include "floe/matmul.h"

#include <algorithm>
#include <string>

namespace floe {

void check_matmul_shape(QType wt, int64_t rows, int64_t cols) {
    const TypeTraits t = type_traits(wt);
    if (wt == QType::Q8_1) throw std::invalid_argument("q8_1 is an activation format, not a weight format");
    if (rows <= 0 || cols <= 0) throw std::invalid_argument("rows and cols must be positive");
    if (cols % t.block_size != 0)
        throw std::invalid_argument(std::string("cols must be a multiple of ") + std::to_string(t.block_size) +
                                    " for " + t.name + ", got " + std::to_string(cols));
}

void matmul(const Kernels& k, QType wt, const void* w, int64_t rows, int64_t cols, const float* x, int n,
            float* y, ThreadPool& pool, std::vector<uint8_t>& scratch) {
    check_matmul_shape(wt, rows, cols);
    const QType at = type_traits(wt).activation;
    const size_t ldw = row_size(wt, cols);
    const void* a = x;
    size_t lda = static_cast<size_t>(cols) * sizeof(float);
    if (quantize_fn q = k.quantize(at)) {  // quantize every activation row once
        lda = row_size(at, cols);
        if (scratch.size() < lda * n) scratch.resize(lda * n);
        for (int c = 0; c < n; ++c) q(x + c * cols, scratch.data() + c * lda, cols);
        a = scratch.data();
    }
    const gemm_fn gemm = k.gemm(wt);
    // Contiguous row ranges per thread, in multiples of 16 so SIMD tiles stay full.
    pool.run([&](int tid, int nth) {
        const int64_t per = (rows + nth - 1) / nth;
        const int64_t chunk = (per + 15) / 16 * 16;
        const int64_t r0 = std::min<int64_t>(rows, tid * chunk);
        const int64_t r1 = std::min<int64_t>(rows, r0 + chunk);
        if (r1 > r0)
            gemm(cols, static_cast<const char*>(w) + r0 * ldw, ldw, static_cast<int>(r1 - r0), a, lda, n, y + r0,
                 static_cast<size_t>(rows));
    });
}

}  // namespace floe
