// The hardware's own reference for the step benchmarks: plain C++ loops, one stream, one thread.
//
// Compiled at benchmark time by edgernn/bench/cpp.py with the system compiler
// (g++ -O3 -march=native -ffast-math -shared -fPIC) and called through ctypes once per run of T steps,
// so no per-step call overhead is timed. Each function steps a model T times from the state it is given
// and writes the Dense head's output of every step: Y (T, O). Weights are float32, row-major, ONNX gate
// orders, the recurrent matrices fused as [W | R] (rows G*H, columns I+H). No BLAS, no intrinsics: this is
// what a compiler makes of the obvious loops. The benchmark models' sizes are compile-time constants
// (template instances chosen by the extern "C" entry points), as edgernn's generated kernels have them.
#include <cmath>

static inline float sigm(float v) { return 1.0f / (1.0f + std::exp(-v)); }

static inline void dense(const float* D, const float* db, int O, int H, const float* h, float* y) {
    for (int o = 0; o < O; ++o) {
        float a = db[o];
        for (int k = 0; k < H; ++k) a += D[o * H + k] * h[k];
        y[o] = a;
    }
}

// g[r] = b[r] + WR[r, :] . xh for r < rows; xh = [x; h] (I + H)
static inline void gemv(const float* WR, const float* b, int rows, int n, const float* xh, float* g) {
    for (int r = 0; r < rows; ++r) {
        const float* w = WR + (long)r * n;
        float a = 0.0f;
        for (int k = 0; k < n; ++k) a += w[k] * xh[k];
        g[r] = b[r] + a;
    }
}

// LSTM (gates i, o, f, c), B = Wb + Rb summed (4H); scratch: 4H + I + H floats.
template <int I, int H>
static void lstm_t(const float* WR, const float* B, const float* D, const float* db, int O, const float* X,
                   int T, float* Y, float* h, float* c, float* scratch) {
    float* g = scratch;
    float* xh = scratch + 4 * H;
    const int n = I + H;
    for (int t = 0; t < T; ++t) {
        for (int k = 0; k < I; ++k) xh[k] = X[(long)t * I + k];
        for (int k = 0; k < H; ++k) xh[I + k] = h[k];
        gemv(WR, B, 4 * H, n, xh, g);
        for (int k = 0; k < H; ++k) {
            float i = sigm(g[k]), o = sigm(g[H + k]), f = sigm(g[2 * H + k]), cc = std::tanh(g[3 * H + k]);
            float cn = f * c[k] + i * cc;
            c[k] = cn;
            h[k] = o * std::tanh(cn);
        }
        dense(D, db, O, H, h, Y + (long)t * O);
    }
}

// GRU (gates z, r, h), linear_before_reset = 1; Bw, Br (3H each); scratch: 3H + 3H + I + H floats.
template <int I, int H>
static void gru_t(const float* WR, const float* Bw, const float* Br, const float* D, const float* db, int O,
                  const float* X, int T, float* Y, float* h, float* scratch) {
    float* gx = scratch;           // W x + Bw (3H)
    float* gh = scratch + 3 * H;   // R h + Br (3H)
    float* xh = scratch + 6 * H;
    const int n = I + H;
    for (int t = 0; t < T; ++t) {
        for (int k = 0; k < I; ++k) xh[k] = X[(long)t * I + k];
        for (int k = 0; k < H; ++k) xh[I + k] = h[k];
        for (int r = 0; r < 3 * H; ++r) {
            const float* w = WR + (long)r * n;
            float ax = 0.0f, ah = 0.0f;
            for (int k = 0; k < I; ++k) ax += w[k] * xh[k];
            for (int k = 0; k < H; ++k) ah += w[I + k] * xh[I + k];
            gx[r] = Bw[r] + ax;
            gh[r] = Br[r] + ah;
        }
        for (int k = 0; k < H; ++k) {
            float z = sigm(gx[k] + gh[k]), r = sigm(gx[H + k] + gh[H + k]);
            float nn = std::tanh(gx[2 * H + k] + r * gh[2 * H + k]);
            h[k] = (1.0f - z) * nn + z * h[k];
        }
        dense(D, db, O, H, h, Y + (long)t * O);
    }
}

// ESN: x <- (1 - a) x + a tanh(W_in u + W x + b), dense reservoir W (N, N); scratch: N floats.
template <int I, int N>
static void esn_t(const float* Win, const float* W, const float* b, float a, const float* D, const float* db,
                  int O, const float* X, int T, float* Y, float* x, float* scratch) {
    float* g = scratch;
    for (int t = 0; t < T; ++t) {
        const float* u = X + (long)t * I;
        for (int r = 0; r < N; ++r) {
            float s = b[r];
            for (int k = 0; k < I; ++k) s += Win[r * I + k] * u[k];
            const float* w = W + (long)r * N;
            float acc = 0.0f;
            for (int k = 0; k < N; ++k) acc += w[k] * x[k];
            g[r] = s + acc;
        }
        for (int r = 0; r < N; ++r) x[r] = (1.0f - a) * x[r] + a * std::tanh(g[r]);
        dense(D, db, O, N, x, Y + (long)t * O);
    }
}

extern "C" {

// The entry points: sizes (I, H) of the benchmark models run their constant-size instance; others return -1.
int lstm_run(const float* WR, const float* B, const float* D, const float* db, int I, int H, int O,
             const float* X, int T, float* Y, float* h, float* c, float* scratch) {
    if (I == 8 && H == 64) lstm_t<8, 64>(WR, B, D, db, O, X, T, Y, h, c, scratch);
    else if (I == 8 && H == 256) lstm_t<8, 256>(WR, B, D, db, O, X, T, Y, h, c, scratch);
    else return -1;
    return 0;
}

int gru_run(const float* WR, const float* Bw, const float* Br, const float* D, const float* db, int I, int H,
            int O, const float* X, int T, float* Y, float* h, float* scratch) {
    if (I == 8 && H == 64) gru_t<8, 64>(WR, Bw, Br, D, db, O, X, T, Y, h, scratch);
    else if (I == 8 && H == 256) gru_t<8, 256>(WR, Bw, Br, D, db, O, X, T, Y, h, scratch);
    else return -1;
    return 0;
}

int esn_run(const float* Win, const float* W, const float* b, float a, const float* D, const float* db, int I,
            int N, int O, const float* X, int T, float* Y, float* x, float* scratch) {
    if (I == 8 && N == 500) esn_t<8, 500>(Win, W, b, a, D, db, O, X, T, Y, x, scratch);
    else return -1;
    return 0;
}
}
