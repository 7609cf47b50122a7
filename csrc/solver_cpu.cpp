// C++ CPU solver: a line-by-line port of the PyTorch reference (fastpid/solver.py) for one
// problem at a time, so that a batch is spread over threads with no synchronisation.
//
// Notation as in the reference: potentials f[i][y], g[j][y]; admissible cells (i, j, y) have
// P(x1=i, y) > 0 and P(x2=j, y) > 0; s(i, j) = sum_y p(y) exp(f + g).
#include "solver_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fastpid {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kMuMin = 1e-13;  // below this R = mu / (1 - s) loses its digits

using Vec = std::vector<double>;

double xlogx(double x) { return x > 0 ? x * std::log(x) : 0.0; }

// log(sum exp(x_k)) over the n values x[k * stride]; -inf when all are -inf.
template <class F>
double logsumexp(int n, F x) {
  double m = kNegInf;
  for (int k = 0; k < n; ++k) m = std::max(m, x(k));
  if (m == kNegInf) return kNegInf;
  double s = 0.0;
  for (int k = 0; k < n; ++k) s += std::exp(x(k) - m);
  return m + std::log(s);
}

// In-place Cholesky of a dense SPD n x n matrix (lower triangle); false, with A partly
// overwritten, at a non-positive pivot. Right-looking: each column's rank-one update of
// the trailing rows is a contiguous axpy (it vectorises without horizontal reductions).
bool cholesky_attempt(double* A, int n, std::vector<double>& col) {
  for (int k = 0; k < n; ++k) {
    double* Ak = A + static_cast<size_t>(k) * n;
    if (!(Ak[k] > 0.0)) return false;
    const double d = std::sqrt(Ak[k]);
    Ak[k] = d;
    for (int r = k + 1; r < n; ++r) col[r] = (A[static_cast<size_t>(r) * n + k] /= d);
    for (int r = k + 1; r < n; ++r) {
      double* Ar = A + static_cast<size_t>(r) * n;
      const double lr = col[r];
#pragma omp simd
      for (int c = k + 1; c <= r; ++c) Ar[c] -= lr * col[c];
    }
  }
  return true;
}

// Cholesky factor of an SPD matrix; one that is singular to rounding (sparse problems leave
// directions the gauge fixing does not remove) is factorised with a 1e-12 ridge instead,
// as the reference does.
void cholesky(double* A, int n) {
  std::vector<double> col(n), copy(A, A + static_cast<size_t>(n) * n);
  if (cholesky_attempt(A, n, col)) return;
  std::copy(copy.begin(), copy.end(), A);
  for (int k = 0; k < n; ++k) A[static_cast<size_t>(k) * n + k] += 1e-12;
  if (cholesky_attempt(A, n, col)) return;
  // Still not positive: fall back to the identity, i.e. the Jacobi-scaled gradient as the
  // direction, and let the line search judge it.
  for (size_t k = 0; k < copy.size(); ++k) A[k] = (k % (n + 1) == 0) ? 1.0 : 0.0;
}

// Solve L L^T x = b in place, L from cholesky(); both sweeps read L by rows.
void cholesky_solve(const double* L, int n, double* b) {
  for (int r = 0; r < n; ++r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    double v = b[r];
#pragma omp simd reduction(- : v)
    for (int p = 0; p < r; ++p) v -= Lr[p] * b[p];
    b[r] = v / Lr[r];
  }
  for (int r = n - 1; r >= 0; --r) {
    const double* Lr = L + static_cast<size_t>(r) * n;
    b[r] /= Lr[r];
    const double br = b[r];
#pragma omp simd
    for (int p = 0; p < r; ++p) b[p] -= Lr[p] * br;
  }
}

class Problem {
 public:
  Problem(const double* P, int n1, int n2, int ny)
      : P_(P), n1(n1), n2(n2), ny(ny), p1y(n1 * ny, 0.0), p2y(n2 * ny, 0.0), py(ny, 0.0),
        logpy(ny, 0.0), la(n1 * ny), lb(n2 * ny), m1(n1 * ny), m2(n2 * ny), cell(n1 * n2) {
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) {
          double p = P[(i * n2 + j) * ny + y];
          p1y[i * ny + y] += p;
          p2y[j * ny + y] += p;
        }
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) py[y] += p1y[i * ny + y];
    for (int y = 0; y < ny; ++y) logpy[y] = py[y] > 0 ? std::log(py[y]) : 0.0;
    for (int k = 0; k < n1 * ny; ++k) {
      m1[k] = p1y[k] > 0;
      la[k] = m1[k] ? std::log(p1y[k]) - logpy[k % ny] : kNegInf;
    }
    for (int k = 0; k < n2 * ny; ++k) {
      m2[k] = p2y[k] > 0;
      lb[k] = m2[k] ? std::log(p2y[k]) - logpy[k % ny] : kNegInf;
    }
    ncells = 0;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        bool any = false;
        for (int y = 0; y < ny && !any; ++y) any = adm(i, j, y);
        cell[i * n2 + j] = any;
        ncells += any;
      }
  }

  bool adm(int i, int j, int y) const { return m1[i * ny + y] && m2[j * ny + y]; }

  // log(p(y) exp(f + g)) of an admissible cell.
  double logw(const Vec& f, const Vec& g, int i, int j, int y) const {
    return logpy[y] + f[i * ny + y] + g[j * ny + y];
  }

  // log s(i, j) for every cell (-inf where no y is admissible). Masked potentials become
  // -inf first, so the inner loops run without branches.
  void log_s(const Vec& f, const Vec& g, Vec& out) const {
    Vec F(n1 * ny), G(n2 * ny);
    for (int k = 0; k < n1 * ny; ++k) F[k] = m1[k] ? logpy[k % ny] + f[k] : kNegInf;
    for (int k = 0; k < n2 * ny; ++k) G[k] = m2[k] ? g[k] : kNegInf;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        const double* Fi = &F[i * ny];
        const double* Gj = &G[j * ny];
        out[i * n2 + j] = logsumexp(ny, [&](int y) { return Fi[y] + Gj[y]; });
      }
  }

  double dual_objective(const Vec& f, const Vec& g) const {
    double t = 0.0;
    for (int k = 0; k < n1 * ny; ++k)
      if (m1[k]) t += p1y[k] * f[k];
    for (int k = 0; k < n2 * ny; ++k)
      if (m2[k]) t += p2y[k] * g[k];
    return t;
  }

  // Lower bound on V from any potentials; ls must hold log_s(f, g).
  double dual_bound(const Vec& f, const Vec& g, const Vec& ls) const {
    double mx = kNegInf;
    for (int c = 0; c < n1 * n2; ++c) mx = std::max(mx, ls[c]);
    return dual_objective(f, g) - mx;
  }

  // I(X1,X2;Y), I(X1;Y), I(X2;Y) of P, and I of the proxy Q0 = P(x1,y) P(x2,y) / p(y).
  void closed_forms(double& mi, double& mi1, double& mi2, double& mi_q0) const {
    double h12y = 0, h12 = 0, h1y = 0, h2y = 0, h1 = 0, h2 = 0, hy = 0, hq12 = 0;
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double m = 0, q = 0;
        for (int y = 0; y < ny; ++y) {
          double p = P_[(i * n2 + j) * ny + y];
          h12y -= xlogx(p);
          m += p;
          if (py[y] > 0) q += p1y[i * ny + y] * p2y[j * ny + y] / py[y];
        }
        h12 -= xlogx(m);
        hq12 -= xlogx(q);
      }
    for (int i = 0; i < n1; ++i) {
      double m = 0;
      for (int y = 0; y < ny; ++y) {
        h1y -= xlogx(p1y[i * ny + y]);
        m += p1y[i * ny + y];
      }
      h1 -= xlogx(m);
    }
    for (int j = 0; j < n2; ++j) {
      double m = 0;
      for (int y = 0; y < ny; ++y) {
        h2y -= xlogx(p2y[j * ny + y]);
        m += p2y[j * ny + y];
      }
      h2 -= xlogx(m);
    }
    for (int y = 0; y < ny; ++y) hy -= xlogx(py[y]);
    mi = h12 + hy - h12y;
    mi1 = h1 + hy - h1y;
    mi2 = h2 + hy - h2y;
    mi_q0 = hq12 + 2.0 * hy - h1y - h2y;
  }

  // Upper bound: I of the exactly feasible rounding of Q (Altschuler-Weed-Rigollet per y).
  double primal_bound(Vec& Q) const {
    const int n = n1 * n2 * ny;
    Vec rows(n1 * ny, 0.0), cols(n2 * ny, 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) {
          double& q = Q[(i * n2 + j) * ny + y];
          if (!adm(i, j, y)) q = 0.0;
          rows[i * ny + y] += q;
        }
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) {
        double r = rows[i * ny + y], t = p1y[i * ny + y];
        double sc = r > t ? t / r : 1.0;
        for (int j = 0; j < n2; ++j) Q[(i * n2 + j) * ny + y] *= sc;
      }
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) cols[j * ny + y] += Q[(i * n2 + j) * ny + y];
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        double c = cols[j * ny + y], t = p2y[j * ny + y];
        double sc = c > t ? t / c : 1.0;
        for (int i = 0; i < n1; ++i) Q[(i * n2 + j) * ny + y] *= sc;
      }
    Vec d1(n1 * ny), d2(n2 * ny), total(ny, 0.0);
    std::fill(rows.begin(), rows.end(), 0.0);
    std::fill(cols.begin(), cols.end(), 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) {
          double q = Q[(i * n2 + j) * ny + y];
          rows[i * ny + y] += q;
          cols[j * ny + y] += q;
        }
    for (int k = 0; k < n1 * ny; ++k) {
      d1[k] = std::max(p1y[k] - rows[k], 0.0);
      total[k % ny] += d1[k];
    }
    for (int k = 0; k < n2 * ny; ++k) d2[k] = std::max(p2y[k] - cols[k], 0.0);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y)
          if (total[y] > 0) Q[(i * n2 + j) * ny + y] += d1[i * ny + y] * (d2[j * ny + y] / total[y]);
    // I_Q(Y; X1, X2) = H(X1,X2) + H(Y) - H(X1,X2,Y); Q(y) = p(y) on the feasible set.
    double h12y = 0, h12 = 0, hy = 0;
    for (int c = 0; c < n1 * n2; ++c) {
      double m = 0;
      for (int y = 0; y < ny; ++y) {
        h12y -= xlogx(Q[c * ny + y]);
        m += Q[c * ny + y];
      }
      h12 -= xlogx(m);
    }
    Vec qy(ny, 0.0);
    for (int k = 0; k < n; ++k) qy[k % ny] += Q[k];
    for (int y = 0; y < ny; ++y) hy -= xlogx(qy[y]);
    return h12 + hy - h12y;
  }

  // Sinkhorn half-steps on kernel R: rows (f) and columns (g) of every y's coupling.
  void row_update(const Vec& logR, const Vec& g, Vec& f) const {
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) {
        if (!m1[i * ny + y]) {
          f[i * ny + y] = kNegInf;
          continue;
        }
        f[i * ny + y] = la[i * ny + y] - logsumexp(n2, [&](int j) {
          return logR[i * n2 + j] + g[j * ny + y];  // g is -inf where m2 is false
        });
      }
  }

  void col_update(const Vec& logR, const Vec& f, Vec& g) const {
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        if (!m2[j * ny + y]) {
          g[j * ny + y] = kNegInf;
          continue;
        }
        g[j * ny + y] = lb[j * ny + y] - logsumexp(n1, [&](int i) {
          return logR[i * n2 + j] + f[i * ny + y];  // f is -inf where m1 is false
        });
      }
  }

  // Q = R p(y) exp(f + g) on admissible cells.
  void coupling(const Vec& logR, const Vec& f, const Vec& g, Vec& Q) const {
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y)
          Q[(i * n2 + j) * ny + y] =
              adm(i, j, y) ? std::exp(logR[i * n2 + j] + logw(f, g, i, j, y)) : 0.0;
  }

  const double* P_;
  int n1, n2, ny;
  Vec p1y, p2y, py, logpy, la, lb;
  std::vector<char> m1, m2, cell;
  int ncells;
};

// The barrier-Newton solve of one problem (see fastpid/solver.py for the method).
class Solver {
 public:
  Solver(const Problem& pr, const SolveOptions& opt)
      : pr(pr), opt(opt), n1(pr.n1), n2(pr.n2), ny(pr.ny), f(n1 * ny), g(n2 * ny),
        logR(n1 * n2), ls(n1 * n2), Q(n1 * n2 * ny), fixed_f(n1 * ny), fixed_g(n2 * ny) {}

  void run(double& lower, double& upper, int64_t& iterations) {
    double mi, mi1, mi2, mi_q0;
    pr.closed_forms(mi, mi1, mi2, mi_q0);
    lower = std::max(mi1, mi2);
    upper = std::min(std::min(mi_q0, mi), mi1 + mi2);
    alternation(opt.warm_steps);
    iterations = opt.warm_steps;
    pr.log_s(f, g, ls);
    lower = std::max(lower, pr.dual_bound(f, g, ls));
    pr.coupling(logR, f, g, Q);
    upper = std::min(upper, pr.primal_bound(Q));
    if (opt.newton) barrier(lower, upper, iterations);
  }

  const Problem& pr;
  const SolveOptions& opt;
  const int n1, n2, ny;
  Vec f, g;  // potentials; entries outside the masks are not used

 private:
  void proxy_log_r() {
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double q = 0;
        for (int y = 0; y < ny; ++y)
          if (pr.py[y] > 0) q += pr.p1y[i * ny + y] * pr.p2y[j * ny + y] / pr.py[y];
        logR[i * n2 + j] = q > 0 ? std::log(q) : kNegInf;
      }
  }

  // Blahut-Arimoto from the proxy: Sinkhorn sweep, then R <- R s^omega (normalised).
  void alternation(int steps, double omega = 1.5) {
    proxy_log_r();
    for (int k = 0; k < n2 * ny; ++k) g[k] = pr.m2[k] ? 0.0 : kNegInf;
    for (int s = 0; s < steps; ++s) {
      pr.row_update(logR, g, f);
      pr.col_update(logR, f, g);
      pr.log_s(f, g, ls);
      for (int c = 0; c < n1 * n2; ++c)
        if (std::isfinite(logR[c])) logR[c] += omega * ls[c];
      const double z = logsumexp(n1 * n2, [&](int c) { return logR[c]; });
      for (int c = 0; c < n1 * n2; ++c) logR[c] -= z;
    }
    pr.row_update(logR, g, f);
  }

  // Barrier objective (to maximise) at (ff, gg) whose log s is lsv; -inf outside the
  // domain max s < 1.
  double barrier_value(const Vec& lsv, const Vec& ff, const Vec& gg, double mu) const {
    double bar = 0.0;
    for (int c = 0; c < n1 * n2; ++c) {
      if (!pr.cell[c]) continue;
      if (!(lsv[c] < 0.0)) return kNegInf;
      bar += std::log(-std::expm1(lsv[c]));
    }
    double v = pr.dual_objective(ff, gg) + mu * bar;
    return std::isfinite(v) ? v : kNegInf;
  }

  void gauge_fix() {
    for (int k = 0; k < n1 * ny; ++k) fixed_f[k] = !pr.m1[k];
    for (int k = 0; k < n2 * ny; ++k) fixed_g[k] = !pr.m2[k];
    for (int y = 0; y < ny; ++y) {
      int first = 0;  // the reference fixes the first admissible x2 (or x2 = 0 if none)
      for (int j = 0; j < n2; ++j)
        if (pr.m2[j * ny + y]) {
          first = j;
          break;
        }
      fixed_g[first * ny + y] = 1;
    }
  }

  // Newton direction of the barrier objective by the Schur complement on g; returns dec^2.
  // Per x1 = i the f-block H_i is ny x ny and the f-g coupling has the structure
  // C_i[y, (j, z)] = a_j[y] w_j[z] + [y == z] d_j[y], so C_i^T H_i^-1 C_i is assembled from
  // u_j = H_i^-1 a_j and H_i^-1 without forming C_i.
  double newton_direction(double mu, Vec& df, Vec& dg) {
    const int m = n2 * ny;
    Vec W(n1 * n2 * ny), tW(n1 * n2 * ny), Wt2(n1 * n2 * ny);
    for (int i = 0; i < n1; ++i)
      for (int j = 0; j < n2; ++j) {
        double oms = -std::expm1(ls[i * n2 + j]);
        double t = mu / oms, t2 = t / oms;
        for (int y = 0; y < ny; ++y) {
          int k = (i * n2 + j) * ny + y;
          double w = pr.adm(i, j, y) ? std::exp(pr.logw(f, g, i, j, y)) : 0.0;
          W[k] = w;
          tW[k] = t * w;
          Wt2[k] = t2 * w;
        }
      }
    Vec grad_f(n1 * ny), grad_g(m), sf(n1 * ny), sg(m);
    for (int i = 0; i < n1; ++i)
      for (int y = 0; y < ny; ++y) {
        double st = 0, sd = 0;
        for (int j = 0; j < n2; ++j) {
          int k = (i * n2 + j) * ny + y;
          st += tW[k];
          sd += Wt2[k] * W[k];
        }
        int q = i * ny + y;
        grad_f[q] = fixed_f[q] ? 0.0 : pr.p1y[q] - st;
        sf[q] = fixed_f[q] ? 0.0 : 1.0 / std::sqrt(std::max(sd + st, 1e-300));
      }
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        double st = 0, sd = 0;
        for (int i = 0; i < n1; ++i) {
          int k = (i * n2 + j) * ny + y;
          st += tW[k];
          sd += Wt2[k] * W[k];
        }
        int q = j * ny + y;
        grad_g[q] = fixed_g[q] ? 0.0 : pr.p2y[q] - st;
        sg[q] = fixed_g[q] ? 0.0 : 1.0 / std::sqrt(std::max(sd + st, 1e-300));
      }

    // S = blockdiag(hgg) - sum_i C_i^T H_i^-1 C_i, rhs = rg - sum_i C_i^T H_i^-1 rf_i.
    Vec S(static_cast<size_t>(m) * m, 0.0), rhs(m);
    for (int j = 0; j < n2; ++j)
      for (int y = 0; y < ny; ++y) {
        for (int z = 0; z < ny; ++z) {
          double h = 0;
          for (int i = 0; i < n1; ++i) {
            int k = (i * n2 + j) * ny;
            h += Wt2[k + y] * W[k + z];
          }
          S[(j * ny + y) * m + j * ny + z] = sg[j * ny + y] * h * sg[j * ny + z];
        }
        double st = 0;
        for (int i = 0; i < n1; ++i) st += tW[(i * n2 + j) * ny + y];
        int q = j * ny + y;
        S[q * m + q] += sg[q] * sg[q] * st + (fixed_g[q] ? 1.0 : 0.0);
        rhs[q] = grad_g[q] * sg[q];
      }

    Vec H(ny * ny), Hinv(ny * ny), a(n2 * ny), w(n2 * ny), d(n2 * ny), u(n2 * ny), alpha(n2 * n2);
    // Kept per i for the back substitution of yf.
    std::vector<Vec> keep_u(n1), keep_Hinv(n1), keep_w(n1), keep_d(n1), keep_xf(n1);
    for (int i = 0; i < n1; ++i) {
      for (int y = 0; y < ny; ++y)
        for (int z = 0; z < ny; ++z) {
          double h = 0;
          for (int j = 0; j < n2; ++j) {
            int k = (i * n2 + j) * ny;
            h += Wt2[k + y] * W[k + z];
          }
          H[y * ny + z] = sf[i * ny + y] * h * sf[i * ny + z];
        }
      for (int y = 0; y < ny; ++y) {
        double st = 0;
        for (int j = 0; j < n2; ++j) st += tW[(i * n2 + j) * ny + y];
        int q = i * ny + y;
        H[y * ny + y] += sf[q] * sf[q] * st + (fixed_f[q] ? 1.0 : 0.0);
      }
      cholesky(H.data(), ny);
      Vec e(ny);
      for (int z = 0; z < ny; ++z) {
        std::fill(e.begin(), e.end(), 0.0);
        e[z] = 1.0;
        cholesky_solve(H.data(), ny, e.data());
        for (int y = 0; y < ny; ++y) Hinv[y * ny + z] = e[y];
      }
      for (int j = 0; j < n2; ++j)
        for (int y = 0; y < ny; ++y) {
          int k = (i * n2 + j) * ny + y;
          a[j * ny + y] = sf[i * ny + y] * Wt2[k];
          w[j * ny + y] = W[k] * sg[j * ny + y];
          d[j * ny + y] = sf[i * ny + y] * sg[j * ny + y] * tW[k];
        }
      for (int j = 0; j < n2; ++j) {
        std::copy(a.begin() + j * ny, a.begin() + (j + 1) * ny, u.begin() + j * ny);
        cholesky_solve(H.data(), ny, u.data() + j * ny);
      }
      for (int j = 0; j < n2; ++j)
        for (int jp = 0; jp < n2; ++jp) {
          double s = 0;
          for (int y = 0; y < ny; ++y) s += a[j * ny + y] * u[jp * ny + y];
          alpha[j * n2 + jp] = s;
        }
      Vec xf(ny);
      for (int y = 0; y < ny; ++y) xf[y] = grad_f[i * ny + y] * sf[i * ny + y];
      cholesky_solve(H.data(), ny, xf.data());
      // Block (j, z), (jp, zp) of C_i^T H_i^-1 C_i; only jp <= j, as cholesky() reads the
      // lower triangle of the symmetric S.
      for (int j = 0; j < n2; ++j) {
        double ax = 0;
        for (int y = 0; y < ny; ++y) ax += a[j * ny + y] * xf[y];
        for (int z = 0; z < ny; ++z) {
          const double wz = w[j * ny + z], dz = d[j * ny + z];
          if (wz == 0.0 && dz == 0.0) continue;
          double* row = &S[(j * ny + z) * m];
          for (int jp = 0; jp <= j; ++jp) {
            const double al = alpha[j * n2 + jp];
            const double* wp = &w[jp * ny];
            const double* dp = &d[jp * ny];
            const double* up = &u[jp * ny];
            const double* u_j = &u[j * ny];
            const double* hz = &Hinv[z * ny];
            for (int zp = 0; zp < ny; ++zp)
              row[jp * ny + zp] -= wz * (al * wp[zp] + u_j[zp] * dp[zp]) +
                                   dz * (up[z] * wp[zp] + hz[zp] * dp[zp]);
          }
          rhs[j * ny + z] -= wz * ax + dz * xf[z];
        }
      }
      keep_u[i] = u;
      keep_Hinv[i] = Hinv;
      keep_w[i] = w;
      keep_d[i] = d;
      keep_xf[i] = xf;
    }
    cholesky(S.data(), m);
    cholesky_solve(S.data(), m, rhs.data());  // rhs is now yg

    double dec2 = 0;
    for (int q = 0; q < m; ++q) {
      dg[q] = rhs[q] * sg[q];
      dec2 += grad_g[q] * dg[q];
    }
    for (int i = 0; i < n1; ++i) {
      const Vec &uu = keep_u[i], &hi = keep_Hinv[i], &ww = keep_w[i], &dd = keep_d[i];
      Vec yf = keep_xf[i], dy(ny, 0.0);
      for (int j = 0; j < n2; ++j) {
        double wy = 0;
        for (int z = 0; z < ny; ++z) {
          wy += ww[j * ny + z] * rhs[j * ny + z];
          dy[z] += dd[j * ny + z] * rhs[j * ny + z];
        }
        for (int y = 0; y < ny; ++y) yf[y] -= uu[j * ny + y] * wy;
      }
      for (int y = 0; y < ny; ++y) {
        double s = 0;
        for (int z = 0; z < ny; ++z) s += hi[y * ny + z] * dy[z];
        int q = i * ny + y;
        df[q] = (yf[y] - s) * sf[q];
        dec2 += grad_f[q] * df[q];
      }
    }
    return dec2;
  }

  // Backtracking (Armijo) step that keeps max s < 1; moves (f, g, ls) to the accepted
  // point and returns the step length (0: rejected, nothing moves).
  double line_search(double mu, const Vec& df, const Vec& dg, double dec2) {
    const double phi0 = barrier_value(ls, f, g, mu);
    const double slack = 1e-13 * (1.0 + std::fabs(phi0));
    Vec ft(f.size()), gt(g.size()), lst(ls.size());
    double alpha = 1.0;
    for (int h = 0; h < 60; ++h) {
      for (size_t k = 0; k < f.size(); ++k) ft[k] = f[k] + alpha * df[k];
      for (size_t k = 0; k < g.size(); ++k) gt[k] = g[k] + alpha * dg[k];
      pr.log_s(ft, gt, lst);
      if (barrier_value(lst, ft, gt, mu) >= phi0 + 0.01 * alpha * dec2 - slack) {
        f.swap(ft);
        g.swap(gt);
        ls.swap(lst);
        return alpha;
      }
      alpha *= 0.5;
    }
    return 0.0;
  }

  double barrier_primal_bound(double mu) {
    Vec lr(n1 * n2), fp(n1 * ny), gp(g);
    for (int c = 0; c < n1 * n2; ++c)
      lr[c] = pr.cell[c] ? std::log(mu) - std::log(-std::expm1(ls[c])) : kNegInf;
    for (int k = 0; k < n2 * ny; ++k)
      if (!pr.m2[k]) gp[k] = kNegInf;
    pr.row_update(lr, gp, fp);
    for (int s = 1; s < opt.polish_sweeps; ++s) {
      pr.col_update(lr, fp, gp);
      pr.row_update(lr, gp, fp);
    }
    pr.coupling(lr, fp, gp, Q);
    return pr.primal_bound(Q);
  }

  void barrier(double& lower, double& upper, int64_t& iterations) {
    double mx = kNegInf;
    pr.log_s(f, g, ls);
    for (int c = 0; c < n1 * n2; ++c) mx = std::max(mx, ls[c]);
    for (int k = 0; k < n1 * ny; ++k) f[k] = pr.m1[k] ? f[k] - mx - 1e-3 : 0.0;
    for (int k = 0; k < n2 * ny; ++k) g[k] = pr.m2[k] ? g[k] : 0.0;
    pr.log_s(f, g, ls);  // from here on, ls is log s of the current (f, g)
    gauge_fix();
    const double ncells = std::max(pr.ncells, 1);
    double mu = std::max(upper - lower, opt.tol) / ncells;
    const double mu_floor = std::max(0.05 * opt.tol / ncells, kMuMin);
    Vec df(n1 * ny), dg(n2 * ny);
    int stalled = 0;
    for (int it = 0; it < opt.max_iter && upper - lower > opt.tol && stalled < 5; ++it) {
      const double gap_before = upper - lower;
      const double dec2 = newton_direction(mu, df, dg);
      const double alpha = line_search(mu, df, dg, dec2);
      ++iterations;
      lower = std::max(lower, pr.dual_bound(f, g, ls));
      const bool centred = dec2 <= 0.25 * mu;
      if (centred || mu <= 10.0 * mu_floor) upper = std::min(upper, barrier_primal_bound(mu));
      const double mu_now = mu;
      if (centred) mu = std::max(mu * opt.mu_factor, mu_floor);
      const double gap = upper - lower;
      const bool stuck = alpha == 0.0 || (mu_now <= mu_floor && centred && gap > 0.99 * gap_before);
      stalled = stuck ? stalled + 1 : 0;
    }
  }

  Vec logR, ls, Q;
  std::vector<char> fixed_f, fixed_g;
};

}  // namespace

void solve_batch(const double* P, int64_t B, int n1, int n2, int ny, const SolveOptions& opt,
                 double* lower, double* upper, double* f, double* g, int64_t* iterations) {
  const int64_t cells = static_cast<int64_t>(n1) * n2 * ny;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < B; ++b) {
    Problem pr(P + b * cells, n1, n2, ny);
    Solver s(pr, opt);
    s.run(lower[b], upper[b], iterations[b]);
    for (int k = 0; k < n1 * ny; ++k) f[b * n1 * ny + k] = pr.m1[k] ? s.f[k] : kNegInf;
    for (int k = 0; k < n2 * ny; ++k) g[b * n2 * ny + k] = pr.m2[k] ? s.g[k] : kNegInf;
  }
}

}  // namespace fastpid
