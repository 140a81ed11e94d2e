#include "floe/matmul.h"

#include <algorithm>
#include <string>

namespace floe {

namespace {
constexpr int64_t kRowChunk = 16;  // rows handed out together, so SIMD tiles stay full
}

void check_matmul_shape(QType wt, int64_t rows, int64_t cols) {
    const TypeTraits t = type_traits(wt);
    if (wt == QType::Q8_1) throw std::invalid_argument("q8_1 is an activation format, not a weight format");
    if (rows <= 0 || cols <= 0) throw std::invalid_argument("rows and cols must be positive");
    if (cols % t.block_size != 0)
        throw std::invalid_argument(std::string("cols must be a multiple of ") + std::to_string(t.block_size) +
                                    " for " + t.name + ", got " + std::to_string(cols));
}

void matmul_jobs(const Kernels& k, const MatmulJob* jobs, int n_jobs, int64_t cols, const float* x, int n,
                 ThreadPool& pool, std::vector<uint8_t>& scratch) {
    // Quantize X once per activation format the jobs need (q8_0 and/or q8_1; f32 is used as is).
    const size_t q8_0_bytes = row_size(QType::Q8_0, cols) * n;
    bool need[2] = {false, false};
    for (int j = 0; j < n_jobs; ++j) {
        check_matmul_shape(jobs[j].type, jobs[j].rows, cols);
        const QType at = type_traits(jobs[j].type).activation;
        need[0] |= at == QType::Q8_0;
        need[1] |= at == QType::Q8_1;
    }
    const size_t total = q8_0_bytes + row_size(QType::Q8_1, cols) * n;
    if ((need[0] || need[1]) && scratch.size() < total) scratch.resize(total);
    uint8_t* const quantized[2] = {scratch.data(), scratch.data() + q8_0_bytes};  // q8_0, q8_1
    auto row_bytes = [&](QType at) { return at == QType::F32 ? cols * sizeof(float) : row_size(at, cols); };
    for (QType at : {QType::Q8_0, QType::Q8_1}) {
        const int i = at == QType::Q8_1;
        if (need[i])
            for (int c = 0; c < n; ++c) k.quantize(at)(x + c * cols, quantized[i] + c * row_bytes(at), cols);
    }

    int64_t chunks = 0;
    for (int j = 0; j < n_jobs; ++j) chunks += (jobs[j].rows + kRowChunk - 1) / kRowChunk;
    pool.run([&](int tid, int nth) {
        // This thread's contiguous share of all chunks, walked job by job.
        const int64_t c0 = chunks * tid / nth, c1 = chunks * (tid + 1) / nth;
        int64_t first = 0;  // index of the job's first chunk
        for (int j = 0; j < n_jobs && first < c1; ++j) {
            const MatmulJob& job = jobs[j];
            const int64_t job_chunks = (job.rows + kRowChunk - 1) / kRowChunk;
            const int64_t lo = std::max(c0, first) - first, hi = std::min(c1, first + job_chunks) - first;
            first += job_chunks;
            if (lo >= hi) continue;
            const int64_t r0 = lo * kRowChunk, r1 = std::min(job.rows, hi * kRowChunk);
            const QType at = type_traits(job.type).activation;
            const void* a = at == QType::F32 ? static_cast<const void*>(x) : quantized[at == QType::Q8_1];
            const size_t ldw = row_size(job.type, cols);
            k.gemm(job.type)(cols, static_cast<const char*>(job.w) + r0 * ldw, ldw, static_cast<int>(r1 - r0), a, row_bytes(at),
                             n, job.y + r0, job.ldy);
        }
    });
}

void matmul(const Kernels& k, QType wt, const void* w, int64_t rows, int64_t cols, const float* x, int n,
            float* y, ThreadPool& pool, std::vector<uint8_t>& scratch) {
    const MatmulJob job{wt, w, rows, y, static_cast<size_t>(rows)};
    matmul_jobs(k, &job, 1, cols, x, n, pool, scratch);
}

}  // namespace floe
