// ggml reference for bench/kernels.py: one matvec with ggml's own CPU kernels, and a read-bandwidth probe.
//
// Linked against the libggml-cpu.so that llama-cpp-python bundles (no llama.cpp build needed); bench/kernels.py
// compiles it with: cc -O3 -march=native -shared -fPIC ggml_ref.c -lggml-cpu -lggml-base -Wl,-rpath,<lib dir>
// ggml_matvec() does what ggml's mul_mat does for one activation row: quantize x once (q8_0, or q8_1 for q4_1),
// then ggml_vec_dot_<w>_<x>(nrc=1) per weight row, rows split in contiguous ranges (multiples of 16) over a
// persistent thread pool that spins then sleeps, like floe's own pool, so both pay the same dispatch costs.
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef void (*vec_dot_fn)(int n, float* s, size_t bs, const void* vx, size_t bx, const void* vy, size_t by, int nrc);
typedef void (*quantize_fn)(const float* x, void* y, int64_t k);

void ggml_cpu_init(void);
int ggml_cpu_has_avx2(void);
void ggml_vec_dot_q4_0_q8_0(int, float*, size_t, const void*, size_t, const void*, size_t, int);
void ggml_vec_dot_q4_1_q8_1(int, float*, size_t, const void*, size_t, const void*, size_t, int);
void ggml_vec_dot_q8_0_q8_0(int, float*, size_t, const void*, size_t, const void*, size_t, int);
void quantize_row_q8_0(const float* x, void* y, int64_t k);
void quantize_row_q8_1(const float* x, void* y, int64_t k);

// Weight types, in the order bench/kernels.py uses: bytes per 32 weights, activation bytes per 32, kernels.
enum { Q4_0, Q4_1, Q8_0, N_TYPES };
static const struct {
    size_t w_bytes, x_bytes;
    vec_dot_fn dot;
    quantize_fn quantize;
} TYPES[N_TYPES] = {
    {18, 34, ggml_vec_dot_q4_0_q8_0, quantize_row_q8_0},
    {20, 36, ggml_vec_dot_q4_1_q8_1, quantize_row_q8_1},
    {34, 34, ggml_vec_dot_q8_0_q8_0, quantize_row_q8_0},
};

static inline void cpu_relax(void) {
#if defined(__x86_64__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

// ---- persistent thread pool (same spin-then-sleep policy as src/floe_native/threadpool.cpp) ----------------

#define MAX_THREADS 64
#define SPIN_ITERATIONS (1 << 16)

typedef void (*task_fn)(void* arg, int ith, int nth);

static struct {
    pthread_t workers[MAX_THREADS];
    uint64_t start_gen[MAX_THREADS];
    int n_workers;
    atomic_uint_fast64_t gen;
    atomic_int pending, stop;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    task_fn fn;
    void* arg;
    int nth;
} pool = {.mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void* worker(void* p) {
    const int ith = (int)(intptr_t)p;
    uint64_t seen = pool.start_gen[ith], g = seen;
    for (;;) {
        for (int i = 0; (g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen && i < SPIN_ITERATIONS; ++i)
            cpu_relax();
        if (g == seen) {
            pthread_mutex_lock(&pool.mutex);
            while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.wake, &pool.mutex);
            pthread_mutex_unlock(&pool.mutex);
        }
        seen = g;
        if (atomic_load(&pool.stop)) return NULL;
        if (ith < pool.nth) pool.fn(pool.arg, ith, pool.nth);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel);
    }
}

static int pool_run(int nth, task_fn fn, void* arg) {
    if (nth < 1 || nth > MAX_THREADS) return -1;
    while (pool.n_workers < nth - 1) {  // workers 1..nth-1, started on first use
        const int ith = ++pool.n_workers;
        pool.start_gen[ith] = atomic_load(&pool.gen);
        if (pthread_create(&pool.workers[ith], NULL, worker, (void*)(intptr_t)ith) != 0) return -1;
    }
    if (nth > 1) {
        pool.fn = fn, pool.arg = arg, pool.nth = nth;
        atomic_store(&pool.pending, pool.n_workers);
        pthread_mutex_lock(&pool.mutex);
        atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
        pthread_mutex_unlock(&pool.mutex);
        pthread_cond_broadcast(&pool.wake);
    }
    fn(arg, 0, nth);
    while (nth > 1 && atomic_load_explicit(&pool.pending, memory_order_acquire) != 0) cpu_relax();
    return 0;
}

// Stops the workers (call before exit, or to switch thread counts cleanly).
void ggml_ref_shutdown(void) {
    pthread_mutex_lock(&pool.mutex);
    atomic_store(&pool.stop, 1);
    atomic_fetch_add(&pool.gen, 1);
    pthread_mutex_unlock(&pool.mutex);
    pthread_cond_broadcast(&pool.wake);
    for (int i = 1; i <= pool.n_workers; ++i) pthread_join(pool.workers[i], NULL);
    pool.n_workers = 0;
    atomic_store(&pool.stop, 0);
}

// ---- matvec ----------------------------------------------------------------------------------------------

typedef struct {
    int type;
    int64_t rows, cols;
    const char* w;
    const void* xq;
    float* y;
} matvec_job;

static void matvec_slice(void* arg, int ith, int nth) {
    const matvec_job* j = arg;
    const size_t ldw = (size_t)j->cols / 32 * TYPES[j->type].w_bytes;
    const int64_t per = (j->rows + nth - 1) / nth, chunk = (per + 15) / 16 * 16;
    const int64_t r0 = ith * chunk < j->rows ? ith * chunk : j->rows;
    const int64_t r1 = r0 + chunk < j->rows ? r0 + chunk : j->rows;
    for (int64_t r = r0; r < r1; ++r) TYPES[j->type].dot((int)j->cols, j->y + r, 0, j->w + r * ldw, 0, j->xq, 0, 1);
}

// Returns ggml_cpu_has_avx2() (1 on an AVX2 build); must be called once before anything else.
int ggml_ref_init(void) {
    ggml_cpu_init();  // fills ggml's fp16 -> fp32 table used by the kernels
    return ggml_cpu_has_avx2();
}

// y[rows] = W[rows, cols] @ x with ggml's kernels, activation quantization included. 0 on success.
int ggml_matvec(int type, int64_t rows, int64_t cols, const void* w, const float* x, float* y, int threads) {
    static void* xq = NULL;
    static size_t xq_size = 0;
    if (type < 0 || type >= N_TYPES || rows <= 0 || cols <= 0 || cols % 32) return -1;
    const size_t need = (size_t)cols / 32 * TYPES[type].x_bytes;
    if (need > xq_size) {
        free(xq);
        xq = aligned_alloc(64, (need + 63) / 64 * 64);
        xq_size = xq ? need : 0;
        if (!xq) return -1;
    }
    TYPES[type].quantize(x, xq, cols);
    matvec_job job = {type, rows, cols, w, xq, y};
    return pool_run(threads, matvec_slice, &job);
}

// ---- read bandwidth --------------------------------------------------------------------------------------

typedef struct {
    const uint8_t* buf;
    size_t bytes;
    uint64_t sums[MAX_THREADS * 8];  // one cache line per thread
} read_job;

static uint64_t sum_u64(const uint8_t* p, size_t n) {  // n: a multiple of 128
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p + i + 96)));
    }
    const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    return (uint64_t)_mm256_extract_epi64(s, 0) + (uint64_t)_mm256_extract_epi64(s, 1) +
           (uint64_t)_mm256_extract_epi64(s, 2) + (uint64_t)_mm256_extract_epi64(s, 3);
#else
    const uint64_t* q = (const uint64_t*)p;
    uint64_t s[8] = {0};
    for (size_t i = 0; i < n / 8; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += q[i + k];  // vectorized at -O3
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
#endif
}

static void read_slice(void* arg, int ith, int nth) {
    read_job* j = arg;
    const size_t per = j->bytes / nth / 128 * 128;
    j->sums[ith * 8] = sum_u64(j->buf + ith * per, per);
}

// Sums a fresh `bytes` buffer `reps` times with `threads` threads; secs[i] = wall time of rep i. 0 on success.
int read_bandwidth(size_t bytes, int threads, int reps, double* secs) {
    read_job* job = calloc(1, sizeof *job);
    uint8_t* buf = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!job || !buf) return free(job), free(buf), -1;
    memset(buf, 1, bytes);  // fault every page in before timing
    job->buf = buf, job->bytes = bytes;
    int rc = 0;
    for (int r = 0; r < reps && rc == 0; ++r) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = pool_run(threads, read_slice, job);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs[r] = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    const uint64_t want = (uint64_t)(bytes / threads / 128 * 128 / 8) * 0x0101010101010101ull;
    for (int t = 0; t < threads && rc == 0; ++t)
        if (job->sums[t * 8] != want) rc = -2;  // the loads really happened
    free(buf);
    free(job);
    return rc;
}
