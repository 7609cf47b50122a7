// Bodies of the CUDA kernels, written once against the block interface of block.hpp:
// kernels.cu runs them on the GPU, emulation.cpp on host threads for the tests.
//
// Layouts (C order): P[B][n1][n2][ny]; f[B][n1][ny]; g[B][n2][ny]; logR[B][n1][n2].
// One thread block solves one problem; its threads stride over the cells of each phase and
// meet at a barrier between phases. Every intermediate of a problem lives in `work`
// (shared memory when it fits, else a slice of global memory).
#pragma once

#include <cmath>
#include <cstdint>

#include "block.hpp"
#include "vector_math.hpp"  // CompensatedSum

namespace fastpid::cuda {

#if defined(__CUDACC__)
template <class T> __device__ __forceinline__ T fp_exp(T x) { return exp(x); }
template <class T> __device__ __forceinline__ T fp_log(T x) { return log(x); }
#else
template <class T> inline T fp_exp(T x) { return std::exp(x); }
template <class T> inline T fp_log(T x) { return std::log(x); }
#endif

template <class T> FASTPID_BODY T neg_inf() { return -static_cast<T>(HUGE_VAL); }
template <class T> FASTPID_BODY T xlogx(T x) { return x > T(0) ? x * fp_log(x) : T(0); }

// log(sum_k exp(x(k))) over k < n, two passes; -inf when every term is -inf.
template <class T, class F>
FASTPID_BODY T logsumexp(int n, F x) {
  T m = neg_inf<T>();
  for (int k = 0; k < n; ++k) m = x(k) > m ? x(k) : m;
  if (m == neg_inf<T>()) return m;
  T s = 0;
  for (int k = 0; k < n; ++k) s += fp_exp(x(k) - m);
  return m + fp_log(s);
}

// ---------------------------------------------------------------------------------------
// Joint distributions (unnormalised). Threads stride over the samples of the whole grid:
// `start` is the thread's global index and `stride` the number of threads in the grid.
// With a block-private histogram `hist` (shared memory, the `bins` entries of out), samples
// land there by fast shared-memory atomics and each block then adds one value per bin to
// out; with hist == nullptr they go straight to out.

template <class Blk, class T, class AddSamples>
FASTPID_BODY void accumulate(const Blk& b, T* hist, int64_t bins, T* out, AddSamples add_samples) {
  if (!hist) {
    add_samples(out);
    return;
  }
  for (int64_t k = b.rank(); k < bins; k += b.size()) hist[k] = T(0);
  b.sync();
  add_samples(hist);
  b.sync();
  for (int64_t k = b.rank(); k < bins; k += b.size())
    if (hist[k] != T(0)) b.atomic_add(out + k, hist[k]);
}

// out[g][x1][x2][y] += w for every sample (codes are in range; groups/weights may be null).
template <class Blk, class T>
FASTPID_BODY void joint_codes_body(const Blk& b, int64_t start, int64_t stride, int64_t N,
                                   const int64_t* x1, const int64_t* x2, const int64_t* y,
                                   const int64_t* groups, const T* weights, int n1, int n2,
                                   int ny, int64_t bins, T* hist, T* out) {
  accumulate(b, hist, bins, out, [&](T* dst) {
    for (int64_t s = start; s < N; s += stride) {
      int64_t idx = x1[s];
      if (groups) idx += groups[s] * n1;
      idx = (idx * n2 + x2[s]) * ny + y[s];
      b.atomic_add(dst + idx, weights ? weights[s] : T(1));
    }
  });
}

// out[g][:, :, y] += w * p1 ⊗ p2 for every sample; threads stride over (sample, x1, x2).
template <class Blk, class T>
FASTPID_BODY void joint_soft_body(const Blk& b, int64_t start, int64_t stride, int64_t N,
                                  const T* p1, const T* p2, const int64_t* y,
                                  const int64_t* groups, const T* weights, int n1, int n2,
                                  int ny, int64_t bins, T* hist, T* out) {
  const int64_t per = static_cast<int64_t>(n1) * n2;
  accumulate(b, hist, bins, out, [&](T* dst) {
    for (int64_t t = start; t < N * per; t += stride) {
      const int64_t s = t / per;
      const int i = static_cast<int>((t % per) / n2), j = static_cast<int>(t % n2);
      T v = p1[s * n1 + i] * p2[s * n2 + j];
      if (weights) v *= weights[s];
      const int64_t base = groups ? groups[s] * per * ny : 0;
      b.atomic_add(dst + base + (static_cast<int64_t>(i) * n2 + j) * ny + y[s], v);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Per-problem quantities shared by the closed forms and the alternation.

template <class T>
struct Marginals {
  T *p1y, *p2y, *py;  // P(x1, y) [n1][ny], P(x2, y) [n2][ny], p(y) [ny]

  static FASTPID_BOTH int64_t size(int n1, int n2, int ny) { return (n1 + n2 + 1) * ny; }
};

// Carves the marginals out of `work` and fills them (ends with a barrier). Every sum here and
// in the closed forms below is one thread's over a whole row, compensated (CompensatedSum): a
// running sum over 10^5 target values came out 1.9e-12 short of its total, and the closed
// forms of a constant source took that for information (-t log t of t = 1 - 1.9e-12).
template <class Blk, class T>
FASTPID_BODY Marginals<T> marginals(const Blk& b, const T* P, int n1, int n2, int ny, T* work) {
  Marginals<T> m{work, work + n1 * ny, work + (n1 + n2) * ny};
  for (int k = b.rank(); k < n1 * ny; k += b.size()) {
    const int i = k / ny, y = k % ny;
    CompensatedSum<T> s;
    for (int j = 0; j < n2; ++j) s.add(P[(i * n2 + j) * ny + y]);
    m.p1y[k] = s.value();
  }
  for (int k = b.rank(); k < n2 * ny; k += b.size()) {
    const int j = k / ny, y = k % ny;
    CompensatedSum<T> s;
    for (int i = 0; i < n1; ++i) s.add(P[(i * n2 + j) * ny + y]);
    m.p2y[k] = s.value();
  }
  b.sync();
  for (int y = b.rank(); y < ny; y += b.size()) {
    CompensatedSum<T> s;
    for (int i = 0; i < n1; ++i) s.add(m.p1y[i * ny + y]);
    m.py[y] = s.value();
  }
  b.sync();
  return m;
}

// Proxy coupling Q0(x1, x2) = sum_y P(x1, y) (P(x2, y) / p(y)): the quotient first, as the
// CPU solver takes it (the product of two masses of 1e-300 underflows where the cell's mass
// does not).
template <class T>
FASTPID_BODY T proxy_mass(const Marginals<T>& m, int i, int j, int ny) {
  CompensatedSum<T> q;
  for (int y = 0; y < ny; ++y)
    if (m.py[y] > T(0)) q.add(m.p1y[i * ny + y] * (m.p2y[j * ny + y] / m.py[y]));
  return q.value();
}

template <class T>
struct ClosedForms {
  T mi, mi1, mi2, mi_q0;  // I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy, in nats
};

// I(X1,X2;Y), I(X1;Y), I(X2;Y) and I of the proxy Q0 = P(x1,y) P(x2,y) / p(y), returned to
// every thread (block-wide sums).
template <class Blk, class T>
FASTPID_BODY ClosedForms<T> closed_forms_from(const Blk& b, const T* P, const Marginals<T>& m,
                                              int n1, int n2, int ny) {
  // Each thread's sums compensated (CompensatedSum): a thread may add up thousands of terms.
  CompensatedSum<T> h12y, h12, hq, h1y, h1, h2y, h2, hy;
  for (int c = b.rank(); c < n1 * n2; c += b.size()) {
    CompensatedSum<T> mass;
    for (int y = 0; y < ny; ++y) {
      const T p = P[c * ny + y];
      h12y.add(-xlogx(p));
      mass.add(p);
    }
    h12.add(-xlogx(mass.value()));
    hq.add(-xlogx(proxy_mass(m, c / n2, c % n2, ny)));
  }
  for (int i = b.rank(); i < n1; i += b.size()) {
    CompensatedSum<T> mass;
    for (int y = 0; y < ny; ++y) {
      h1y.add(-xlogx(m.p1y[i * ny + y]));
      mass.add(m.p1y[i * ny + y]);
    }
    h1.add(-xlogx(mass.value()));
  }
  for (int j = b.rank(); j < n2; j += b.size()) {
    CompensatedSum<T> mass;
    for (int y = 0; y < ny; ++y) {
      h2y.add(-xlogx(m.p2y[j * ny + y]));
      mass.add(m.p2y[j * ny + y]);
    }
    h2.add(-xlogx(mass.value()));
  }
  for (int y = b.rank(); y < ny; y += b.size()) hy.add(-xlogx(m.py[y]));
  const T H12y = b.sum(h12y.value()), H12 = b.sum(h12.value()), Hq = b.sum(hq.value()),
          H1y = b.sum(h1y.value()), H1 = b.sum(h1.value()), H2y = b.sum(h2y.value()),
          H2 = b.sum(h2.value()), Hy = b.sum(hy.value());
  return {H12 + Hy - H12y, H1 + Hy - H1y, H2 + Hy - H2y, Hq + T(2) * Hy - H1y - H2y};
}

// out[0..3] = the closed forms of P; `work` holds Marginals::size doubles.
template <class Blk, class T>
FASTPID_BODY void closed_forms_body(const Blk& b, const T* P, int n1, int n2, int ny, T* work,
                                    T* out) {
  const ClosedForms<T> cf = closed_forms_from(b, P, marginals(b, P, n1, n2, ny, work), n1, n2, ny);
  if (b.rank() == 0) {
    out[0] = cf.mi;
    out[1] = cf.mi1;
    out[2] = cf.mi2;
    out[3] = cf.mi_q0;
  }
}

// ---------------------------------------------------------------------------------------
// Blahut-Arimoto alternation from the proxy (method "fast" and the solvers' warm start):
// per step a Sinkhorn sweep f <- la - lse_j(logR + g), g <- lb - lse_i(logR + f), then
// R <- R s^omega normalised, s(i, j) = sum_y p(y) exp(f + g). Ends with a row update.

// The arrays of the alternation, in this order in its `work`: marginals, log p(y), la, lb, f, g,
// log R, log s. The certified solver keeps them as its own (solver_block.hpp).
template <class T>
struct AlternationState {
  Marginals<T> m;
  T *logpy, *la, *lb, *f, *g, *logR, *ls;
  int steps = 0;  // the steps taken
  double e = NAN;  // the stationarity at the last probe (NaN: none)

  static FASTPID_BOTH int64_t size(int n1, int n2, int ny) {
    return Marginals<T>::size(n1, n2, ny) + ny + 2 * (n1 + n2) * ny + 2 * n1 * n2;
  }
};

FASTPID_BOTH int64_t alternation_work(int n1, int n2, int ny) {
  return AlternationState<double>::size(n1, n2, ny);
}

// Sinkhorn half-steps on kernel R, for the rows f[i][y] = la - lse_j(logR + g) and the columns
// g[j][y] = lb - lse_i(logR + f); -inf where P(x1, y) = 0 (P(x2, y) = 0). f and g are -inf
// there, so masked terms drop out of every lse. Threads stride over the entries they write.
template <class Blk, class T>
FASTPID_BODY void update_rows(const Blk& b, int n1, int n2, int ny, const T* p1y, const T* la,
                              const T* logR, const T* g, T* f) {
  for (int k = b.rank(); k < n1 * ny; k += b.size()) {
    const int i = k / ny, y = k % ny;
    f[k] = p1y[k] > T(0)
               ? la[k] - logsumexp<T>(n2, [&](int j) { return logR[i * n2 + j] + g[j * ny + y]; })
               : neg_inf<T>();
  }
}

template <class Blk, class T>
FASTPID_BODY void update_columns(const Blk& b, int n1, int n2, int ny, const T* p2y, const T* lb,
                                 const T* logR, const T* f, T* g) {
  for (int k = b.rank(); k < n2 * ny; k += b.size()) {
    const int j = k / ny, y = k % ny;
    g[k] = p2y[k] > T(0)
               ? lb[k] - logsumexp<T>(n1, [&](int i) { return logR[i * n2 + j] + f[i * ny + y]; })
               : neg_inf<T>();
  }
}

// The alternation's end as given (method "fast"). A rule that extends it has the stationarity
// max log s - sum R log s probed `block` steps before the end and at it, and returns the new
// end from the two (solver_block.hpp, WarmEnd).
struct FixedEnd {
  int block = 0;  // steps between the probes; 0: none
  FASTPID_BOTH int operator()(int end, double, double) const { return end; }
};

// Runs the alternation in `work` (alternation_work elements) and returns where its arrays are;
// ends with a barrier.
template <class Blk, class T, class EndRule = FixedEnd>
FASTPID_BODY AlternationState<T> alternate(const Blk& b, const T* P, int n1, int n2, int ny,
                                           int steps, T omega, T* work, EndRule end_rule = {}) {
  AlternationState<T> s;
  s.m = marginals(b, P, n1, n2, ny, work);
  s.logpy = work + Marginals<T>::size(n1, n2, ny);
  s.la = s.logpy + ny;
  s.lb = s.la + n1 * ny;
  s.f = s.lb + n2 * ny;
  s.g = s.f + n1 * ny;
  s.logR = s.g + n2 * ny;
  s.ls = s.logR + n1 * n2;
  const Marginals<T>& m = s.m;
  T *logpy = s.logpy, *la = s.la, *lb = s.lb, *f = s.f, *g = s.g, *logR = s.logR, *ls = s.ls;
  const T ninf = neg_inf<T>();
  const int r = b.rank(), nt = b.size();

  for (int y = r; y < ny; y += nt) logpy[y] = m.py[y] > T(0) ? fp_log(m.py[y]) : T(0);
  b.sync();
  for (int k = r; k < n1 * ny; k += nt)
    la[k] = m.p1y[k] > T(0) ? fp_log(m.p1y[k]) - logpy[k % ny] : ninf;
  for (int k = r; k < n2 * ny; k += nt) {
    lb[k] = m.p2y[k] > T(0) ? fp_log(m.p2y[k]) - logpy[k % ny] : ninf;
    g[k] = m.p2y[k] > T(0) ? T(0) : ninf;
  }
  for (int c = r; c < n1 * n2; c += nt) {
    const T q = proxy_mass(m, c / n2, c % n2, ny);
    logR[c] = q > T(0) ? fp_log(q) : ninf;
  }
  b.sync();

  int end = steps;
  T e_before = T(HUGE_VAL);
  for (int step = 0; step < end; ++step) {
    update_rows(b, n1, n2, ny, m.p1y, la, logR, g, f);
    b.sync();
    update_columns(b, n1, n2, ny, m.p2y, lb, logR, f, g);
    b.sync();
    const bool probe = end_rule.block > 0 && (step + 1 == end - end_rule.block || step + 1 == end);
    T local_max = ninf, local_top = ninf, local_mean = 0;
    for (int c = r; c < n1 * n2; c += nt) {
      const int i = c / n2, j = c % n2;
      ls[c] = logsumexp<T>(ny, [&](int y) { return logpy[y] + f[i * ny + y] + g[j * ny + y]; });
      if (probe && ls[c] > ninf) {
        local_top = ls[c] > local_top ? ls[c] : local_top;
        if (logR[c] > ninf) local_mean += fp_exp(logR[c]) * ls[c];
      }
      if (logR[c] > ninf) logR[c] += omega * ls[c];
      local_max = logR[c] > local_max ? logR[c] : local_max;
    }
    if (probe) {
      const T e = b.max(local_top) - b.sum(local_mean);
      if (step + 1 == end) end = end_rule(end, e, e_before);
      e_before = e;
      s.e = e;
    }
    // Normalise R: log of its total by a block-wide max, then a block-wide sum.
    const T top = b.max(local_max);
    T local_sum = 0;
    for (int c = r; c < n1 * n2; c += nt) local_sum += fp_exp(logR[c] - top);
    const T z = top + fp_log(b.sum(local_sum));
    for (int c = r; c < n1 * n2; c += nt) logR[c] -= z;
    b.sync();
  }
  update_rows(b, n1, n2, ny, m.p1y, la, logR, g, f);
  b.sync();
  s.steps = end;
  return s;
}

template <class Blk, class T>
FASTPID_BODY void alternation_body(const Blk& b, const T* P, int n1, int n2, int ny, int steps,
                                   T omega, T* work, T* f_out, T* g_out, T* logR_out) {
  const AlternationState<T> s = alternate(b, P, n1, n2, ny, steps, omega, work);
  for (int k = b.rank(); k < n1 * ny; k += b.size()) f_out[k] = s.f[k];
  for (int k = b.rank(); k < n2 * ny; k += b.size()) g_out[k] = s.g[k];
  for (int c = b.rank(); c < n1 * n2; c += b.size()) logR_out[c] = s.logR[c];
}

}  // namespace fastpid::cuda
