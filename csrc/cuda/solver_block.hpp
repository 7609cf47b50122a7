// The certified barrier-Newton solver of solver_core.hpp with one problem per thread block: the
// same algorithm, constants, stopping rules and outputs as solve_one(), its phases shared by
// the threads of the block. Threads stride over the cells (rows, columns, x1 blocks) of each
// phase and meet at a barrier between phases; the Schur complement S on g is factorised by a
// right-looking Cholesky whose trailing rows all threads update.
//
// Every scalar the control flow depends on (bounds, mu, dec^2, step length, stall counter,
// pivots) is a block-wide reduction or a value all threads read after the same barrier, so all
// threads take the same branches and reach every barrier equally often.
//
// The workspace is kept lean so that it fits in shared memory: S is stored as its lower
// triangle by rows; the cell weights t W, t W / tau and the coupling coefficients of each
// f-block are recomputed from W and per-cell factors instead of stored; a failed Cholesky
// attempt reassembles its matrix instead of keeping a copy; and the primal bound's arrays share
// memory with the Newton direction's, which are never live at the same time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "block.hpp"
#include "kernels.hpp"
#include "solver_core.hpp"

namespace fastpid::cuda {
namespace block_solver {

using detail::fp_max;
using detail::fp_min;
using detail::kNegInf;

// Where the arrays of one problem lie in `work`. One layout code for counting and carving, so
// that solve_block_work() and the body cannot disagree.
struct Layout {
  double* alternation;  // AlternationState: marginals, log p(y), la, lb, f, g, log R, log s
  double *ft, *gt, *lst;           // trial point (swapped with f, g, log s when a step is taken)
  double *df, *dg;                 // Newton direction
  double* R;                       // per cell: the multiplier that weights the Newton system
  double* tau;                     // per cell: the slack, which tends to 1 - s
  char *cell, *fixed_f, *fixed_g;  // admissible cells (some y admissible), fixed unknowns
  double *c1, *c2;                 // dual_bound()'s shifts per x1 and per x2
  // Per (i, j): the corrector's term of the target, 0 between steps: kept out of the memory
  // the primal bound shares (it overlapped the bound's arrays where (n1 + n2) ny is large
  // next to n1 n2, and their deficits perturbed the next step).
  double* corr;
  double* soc;  // per (i, j): the corrector's term of the linearised s, kept like corr
  // Newton direction, one iteration at a time (see solve_one's NewtonScratch).
  double* W;                          // p(y) exp(f + g) per cell (i, j, y), 0 if not admissible
  double *t, *t2, *oms;               // per (i, j): R, R / tau and tau
  double *rp, *dtau, *dR;             // per (i, j): 1 - s - tau, and the steps of tau and R
  double *grad_f, *sf, *grad_g, *sg;  // gradients and Jacobi scalings
  double *S, *rhs, *yg;  // Schur complement (lower triangle by rows), rhs, solution
  double* col;           // the column of S being eliminated
  // Per x1 = i: H_i then its factor, its factorisation's column, H_i^-1, u_j and H_i^-1 rf_i
  // (solve_f_block()).
  double *H, *hcol, *Hinv, *u, *xf;
  // Primal bound (shares memory with the Newton direction).
  double *Q, *lr, *fp, *gp, *d1, *d2, *total;

  FASTPID_BOTH Layout(int n1, int n2, int ny, detail::Arena& arena) {
    const size_t a1 = static_cast<size_t>(n1) * ny, a2 = static_cast<size_t>(n2) * ny;
    const size_t cells = static_cast<size_t>(n1) * n2, n = cells * ny, m = a2;
    const size_t blocks = static_cast<size_t>(n1) * ny * ny;
    alternation = arena.doubles(AlternationState<double>::size(n1, n2, ny));
    ft = arena.doubles(a1);
    gt = arena.doubles(a2);
    lst = arena.doubles(cells);
    df = arena.doubles(a1);
    dg = arena.doubles(a2);
    R = arena.doubles(cells);
    tau = arena.doubles(cells);
    cell = arena.bytes(cells);
    fixed_f = arena.bytes(a1);
    fixed_g = arena.bytes(a2);
    c1 = arena.doubles(n1);
    c2 = arena.doubles(n2);
    corr = arena.doubles(cells);
    soc = arena.doubles(cells);
    const size_t shared_from = arena.used;
    W = arena.doubles(n);
    t = arena.doubles(cells);
    t2 = arena.doubles(cells);
    oms = arena.doubles(cells);
    rp = arena.doubles(cells);
    dtau = arena.doubles(cells);
    dR = arena.doubles(cells);
    grad_f = arena.doubles(a1);
    sf = arena.doubles(a1);
    grad_g = arena.doubles(a2);
    sg = arena.doubles(a2);
    S = arena.doubles(m * (m + 1) / 2);
    rhs = arena.doubles(m);
    yg = arena.doubles(m);
    col = arena.doubles(m);
    H = arena.doubles(blocks);
    hcol = arena.doubles(a1);
    Hinv = arena.doubles(blocks);
    u = arena.doubles(n);
    xf = arena.doubles(a1);
    const size_t newton_end = arena.used;
    arena.used = shared_from;
    Q = arena.doubles(n);
    lr = arena.doubles(cells);
    fp = arena.doubles(a1);
    gp = arena.doubles(a2);
    d1 = arena.doubles(a1);
    d2 = arena.doubles(a2);
    total = arena.doubles(ny);
    arena.used = fp_max(arena.used, newton_end);
  }
};

// cholesky() of solver_core.hpp for one thread's small matrix, which assemble(A) builds: a
// failed attempt rebuilds A rather than restoring a copy of it.
template <class Assemble>
FASTPID_BODY void factor_small(double* A, int n, double* col, Assemble assemble) {
  assemble(A);
  if (detail::cholesky_attempt(A, n, col)) return;
  assemble(A);
  for (int k = 0; k < n; ++k) A[k * n + k] += 1e-12;
  if (detail::cholesky_attempt(A, n, col)) return;
  for (int k = 0; k < n * n; ++k) A[k] = (k % (n + 1) == 0) ? 1.0 : 0.0;
}

// The alternation's end before Newton: extended while it would certify by itself
// (detail::warm_more(), as in the CPU solver).
struct WarmEnd {
  int block;  // steps between the stationarity probes; 0: none
  double tol;
  FASTPID_BOTH int operator()(int end, double e, double e_before) const {
    return detail::warm_more(end, e, e_before, tol);
  }
};

template <class Blk>
struct Solver : Layout {
  const Blk& b;
  const SolveOptions& opt;
  const double* P;
  const int n1, n2, ny, m;
  const int r, nt;  // this thread's rank, threads in the block
  const AlternationState<double> st;
  double *f, *g, *ls;  // current point; swapped with (ft, gt, lst) when a step is accepted
  int cell_count = 0;  // admissible cells

  FASTPID_BODY Solver(const Blk& b, const SolveOptions& opt, const Layout& layout,
                      const AlternationState<double>& st, const double* P, int n1, int n2,
                      int ny)
      : Layout(layout), b(b), opt(opt), P(P), n1(n1), n2(n2), ny(ny), m(n2 * ny),
        r(b.rank()), nt(b.size()), st(st), f(st.f), g(st.g), ls(st.ls) {}

  FASTPID_BODY void run(double& lower, double& upper, int64_t& iterations) {
    const ClosedForms<double> cf = closed_forms_from(b, P, st.m, n1, n2, ny);
    lower = fp_max(cf.mi1, cf.mi2);
    upper = fp_min(fp_min(cf.mi_q0, cf.mi), cf.mi1 + cf.mi2);
    iterations = st.steps;  // the alternation has run (alternate())
    mark_cells();
    log_s(f, g, ls);
    lower = fp_max(lower, dual_bound());
    if (!opt.newton || detail::warm_bound_due(st.e, opt.tol)) {  // as the CPU solver's run()
      coupling(st.logR, f, g);
      b.sync();
      upper = fp_min(upper, primal_bound());
    }
    if (opt.newton) barrier(lower, upper, iterations, detail::start_gap(st.e, opt.tol, lower, upper));
  }

  // The upper bound primal_bound() gives a coupling Qin[n1][n2][ny] (the tests' entry to the
  // block's rounding).
  FASTPID_BODY double bound_of(const double* Qin) {
    for (int k = r; k < n1 * n2 * ny; k += nt) Q[k] = Qin[k];
    b.sync();
    return primal_bound();
  }

  // f[n1][ny], g[n2][ny] with -inf on masked entries.
  FASTPID_BODY void write_potentials(double* f_out, double* g_out) const {
    for (int k = r; k < n1 * ny; k += nt) f_out[k] = m1(k) ? f[k] : kNegInf;
    for (int k = r; k < n2 * ny; k += nt) g_out[k] = m2(k) ? g[k] : kNegInf;
  }

 private:
  // --- the problem's data ---------------------------------------------------------------

  FASTPID_BODY bool m1(int k) const { return st.m.p1y[k] > 0; }
  FASTPID_BODY bool m2(int k) const { return st.m.p2y[k] > 0; }
  FASTPID_BODY bool adm(int i, int j, int y) const { return m1(i * ny + y) && m2(j * ny + y); }

  // log(p(y) exp(f + g)) of an admissible cell.
  FASTPID_BODY double logw(const double* ff, const double* gg, int i, int j, int y) const {
    return st.logpy[y] + ff[i * ny + y] + gg[j * ny + y];
  }

  // cell[c] for this thread's cells, and the block's count of them.
  FASTPID_BODY void mark_cells() {
    int count = 0;
    for (int c = r; c < n1 * n2; c += nt) {
      bool any = false;
      for (int y = 0; y < ny && !any; ++y) any = adm(c / n2, c % n2, y);
      cell[c] = any;
      count += any;
    }
    cell_count = b.sum(count);
  }

  // log s(i, j) of this thread's cells (-inf where no y is admissible). The functions below that
  // read lsv stride over the same cells, so they need no barrier after this one.
  FASTPID_BODY void log_s(const double* ff, const double* gg, double* out) const {
    for (int c = r; c < n1 * n2; c += nt) {
      const int i = c / n2, j = c % n2;
      out[c] = logsumexp<double>(ny, [&](int y) {
        const double F = m1(i * ny + y) ? st.logpy[y] + ff[i * ny + y] : kNegInf;
        return F + (m2(j * ny + y) ? gg[j * ny + y] : kNegInf);
      });
    }
  }

  // This thread's part of sum P(x1, y) f + sum P(x2, y) g over the unmasked entries.
  FASTPID_BODY double dual_part(const double* ff, const double* gg) const {
    double v = 0.0;
    for (int k = r; k < n1 * ny; k += nt)
      if (m1(k)) v += st.m.p1y[k] * ff[k];
    for (int k = r; k < n2 * ny; k += nt)
      if (m2(k)) v += st.m.p2y[k] * gg[k];
    return v;
  }

  FASTPID_BODY double max_log_s() const {
    double mx = kNegInf;
    for (int c = r; c < n1 * n2; c += nt) mx = fp_max(mx, ls[c]);
    return b.max(mx);
  }

  // Lower bound on V at (f, g), whose log s is ls: the bound of (f + c, g + d), shifted per
  // x1 by c_i = -max_j log s_ij and then per x2 by d_j = -max_i (log s_ij + c_i) over the cells
  // (Problem::dual_bound in solver_core.hpp). Rows and columns read other threads' cells,
  // hence the barriers.
  FASTPID_BODY double dual_bound() const {
    double *c = c1, *d = c2;
    double shift = 0.0;
    b.sync();
    for (int i = r; i < n1; i += nt) {
      double mx = kNegInf, p = 0.0;
      for (int j = 0; j < n2; ++j)
        if (cell[i * n2 + j]) mx = fp_max(mx, ls[i * n2 + j]);
      c[i] = isfinite(mx) ? -mx : 0.0;
      for (int y = 0; y < ny; ++y) p += st.m.p1y[i * ny + y];
      shift += p * c[i];
    }
    b.sync();
    for (int j = r; j < n2; j += nt) {
      double mx = kNegInf, p = 0.0;
      for (int i = 0; i < n1; ++i)
        if (cell[i * n2 + j]) mx = fp_max(mx, ls[i * n2 + j] + c[i]);
      d[j] = isfinite(mx) ? -mx : 0.0;
      for (int y = 0; y < ny; ++y) p += st.m.p2y[j * ny + y];
      shift += p * d[j];
    }
    b.sync();
    double top = kNegInf;
    for (int k = r; k < n1 * n2; k += nt)
      if (cell[k]) top = fp_max(top, ls[k] + c[k / n2] + d[k % n2]);
    return b.sum(dual_part(f, g) + shift) - b.max(top);
  }

  // Barrier objective (to maximise) at (ff, gg) whose log s is lsv; -inf outside max s < 1.
  FASTPID_BODY double barrier_value(const double* lsv, const double* ff, const double* gg,
                                    double mu) const {
    double bar = 0.0;
    for (int c = r; c < n1 * n2; c += nt) {
      if (!cell[c]) continue;
      if (!(lsv[c] < 0.0)) {
        bar = kNegInf;  // makes the block's sum -inf
        break;
      }
      bar += log(-expm1(lsv[c]));
    }
    const double v = b.sum(dual_part(ff, gg) + mu * bar);
    return isfinite(v) ? v : kNegInf;
  }

  // Q = R p(y) exp(f + g) on admissible cells, for this thread's cells.
  FASTPID_BODY void coupling(const double* logR, const double* ff, const double* gg) {
    for (int c = r; c < n1 * n2; c += nt) {
      const int i = c / n2, j = c % n2;
      for (int y = 0; y < ny; ++y)
        Q[c * ny + y] = adm(i, j, y) ? exp(logR[c] + logw(ff, gg, i, j, y)) : 0.0;
    }
  }

  // Upper bound: I of the exactly feasible rounding of Q (overwritten), as solve_one's
  // primal_bound(): per y, scale rows, then columns, down to the marginals, then add the outer
  // product of the deficits. Q must be complete (a barrier after it was written).
  // A Q with a NaN or infinite admissible entry has no such rounding: +inf, always valid (the
  // sums would skip NaN entries as no mass and give a number below V).
  FASTPID_BODY double primal_bound() {
    const double *p1y = st.m.p1y, *p2y = st.m.p2y;
    auto q = [&](int i, int j, int y) -> double& { return Q[(i * n2 + j) * ny + y]; };
    double broken = 0;
    for (int k = r; k < n1 * ny; k += nt) {
      const int i = k / ny, y = k % ny;
      double rows = 0;
      for (int j = 0; j < n2; ++j) {
        if (!adm(i, j, y)) q(i, j, y) = 0.0;
        rows += q(i, j, y);
      }
      if (!(rows < HUGE_VAL)) broken = 1;  // NaN fails too
      const double sc = rows > p1y[k] ? p1y[k] / rows : 1.0;
      for (int j = 0; j < n2; ++j) q(i, j, y) *= sc;
    }
    if (b.sum(broken) > 0) return HUGE_VAL;  // also the barrier before the column pass
    for (int k = r; k < n2 * ny; k += nt) {
      const int j = k / ny, y = k % ny;
      double cols = 0;
      for (int i = 0; i < n1; ++i) cols += q(i, j, y);
      const double sc = cols > p2y[k] ? p2y[k] / cols : 1.0;
      for (int i = 0; i < n1; ++i) q(i, j, y) *= sc;
    }
    b.sync();
    for (int k = r; k < n1 * ny; k += nt) {
      double rows = 0;
      for (int j = 0; j < n2; ++j) rows += q(k / ny, j, k % ny);
      d1[k] = fp_max(p1y[k] - rows, 0.0);
    }
    for (int k = r; k < n2 * ny; k += nt) {
      double cols = 0;
      for (int i = 0; i < n1; ++i) cols += q(i, k / ny, k % ny);
      d2[k] = fp_max(p2y[k] - cols, 0.0);
    }
    b.sync();
    for (int y = r; y < ny; y += nt) {
      double s = 0;
      for (int i = 0; i < n1; ++i) s += d1[i * ny + y];
      total[y] = s;
    }
    b.sync();
    // I_Q(Y; X1, X2) = H(X1,X2) + H(Y) - H(X1,X2,Y); Q(y) = p(y) on the feasible set.
    double h12y = 0, h12 = 0, hy = 0;
    for (int c = r; c < n1 * n2; c += nt) {
      const int i = c / n2, j = c % n2;
      double mass = 0;
      for (int y = 0; y < ny; ++y) {
        if (total[y] > 0) q(i, j, y) += d1[i * ny + y] * (d2[j * ny + y] / total[y]);
        h12y -= xlogx(q(i, j, y));
        mass += q(i, j, y);
      }
      h12 -= xlogx(mass);
    }
    b.sync();
    for (int y = r; y < ny; y += nt) {
      double qy = 0;
      for (int c = 0; c < n1 * n2; ++c) qy += Q[c * ny + y];
      hy -= xlogx(qy);
    }
    return b.sum(h12 + hy - h12y);
  }

  // --- the barrier method ---------------------------------------------------------------

  FASTPID_BODY void gauge_fix() {
    for (int k = r; k < n1 * ny; k += nt) fixed_f[k] = !m1(k);
    for (int y = r; y < ny; y += nt) {
      const int gauge = detail::gauge_x2(st.m.p2y, n2, ny, y);
      for (int j = 0; j < n2; ++j) fixed_g[j * ny + y] = !m2(j * ny + y) || j == gauge;
    }
  }

  FASTPID_BODY void barrier(double& lower, double& upper, int64_t& iterations, double gap0) {
    const double mx = max_log_s();  // ls is still log s of (f, g), from run()
    for (int k = r; k < n1 * ny; k += nt) f[k] = m1(k) ? f[k] - mx - detail::kDomainMargin : 0.0;
    for (int k = r; k < n2 * ny; k += nt) g[k] = m2(k) ? g[k] : 0.0;
    gauge_fix();
    b.sync();
    log_s(f, g, ls);  // from here on, ls is log s of the current (f, g)
    const double ncells = fp_max(cell_count, 1);
    double mu = fp_max(gap0, opt.tol) / ncells;
    const double mu_floor = fp_max(0.05 * opt.tol / ncells, detail::kMuMin);
    for (int c = r; c < n1 * n2; c += nt) {
      tau[c] = cell[c] ? -expm1(ls[c]) : 1.0;
      const double mixture = cell[c] && isfinite(st.logR[c]) ? exp(st.logR[c] + mx + detail::kDomainMargin) : 0.0;
      R[c] = fp_max(mixture, mu / tau[c]);
      if (cell[c]) tau[c] = fp_min(tau[c], fp_max(mu / R[c], detail::kSlackStartCut * tau[c]));
      corr[c] = 0.0;
      soc[c] = 0.0;
    }
    int stalled = 0;
    int jumps = 0;  // extrapolations so far
    bool predictor = true;
    double last_target = mu;
    const double mu_start = mu;
    bool floor_before = false;  // the last step was at mu's floor
    for (int it = 0; it < opt.max_iter && upper - lower > opt.tol && stalled < 5; ++it) {
      const double gap_before = upper - lower;
      factor_newton();
      if (predictor) mu = predict(mu, last_target, mu_floor);
      last_target = mu;
      double dec2 = solve_newton(mu);
      if (!isfinite(dec2) && predictor) {  // solve_one's retry without the predictor's terms
        for (int c = r; c < n1 * n2; c += nt) corr[c] = soc[c] = 0.0;
        b.sync();
        dec2 = solve_newton(mu);
      }
      double alpha = primal_dual_step(mu, dec2);
      // Each thread clears its own cells, the only ones primal_dual_step() reads; the next
      // readers of all cells come after factor_newton()'s barriers.
      for (int c = r; c < n1 * n2; c += nt) corr[c] = soc[c] = 0.0;
      predictor = alpha >= 0.0;
      const bool barrier_taken = alpha < 0.0;
      if (barrier_taken) alpha = barrier_step(mu);
      b.sync();
      ++iterations;
      lower = fp_max(lower, dual_bound());
      if (detail::primal_bound_due(dec2, mu, mu_floor, ncells, opt.tol)) {
        upper = fp_min(upper, barrier_primal_bound(opt.polish_sweeps));
        const bool floor_polish = mu <= mu_floor && (detail::centred(dec2, mu) || floor_before);
        if (floor_polish && upper - lower > opt.tol && opt.polish_sweeps < detail::kFloorPolishSweeps)
          upper = fp_min(upper, barrier_primal_bound(detail::kFloorPolishSweeps));
        if (floor_polish && upper - lower > opt.tol)
          upper = fp_min(upper, barrier_primal_bound(detail::kFloorPolishSweeps, detail::kSupportFactor * mu));
      }
      const double mu_now = mu;
      floor_before = mu_now <= mu_floor;
      if (barrier_taken && alpha < detail::kMuRaiseStep)
        mu = fp_min(detail::kMuRaise * mu, mu_start);
      else
        mu = detail::next_mu(mu, mean_complementarity(), opt.mu_factor, mu_floor);
      const double gap = upper - lower;
      bool stuck =
          alpha == 0.0 || (mu_now <= mu_floor && detail::centred(dec2, mu_now) && gap > 0.99 * gap_before);
      if (stuck && alpha > 0.0 && !barrier_taken && jumps < detail::kExtrapolateMost && mu_floor > detail::kMuMin &&
          extrapolate(mu_now, lower)) {
        ++jumps;
        stuck = false;
        predictor = false;  // as solve_one's
      }
      stalled = stuck ? stalled + 1 : 0;
    }
    if (upper - lower > opt.tol) upper = fp_min(upper, barrier_primal_bound(opt.polish_sweeps));  // as solve_one's
  }

  // solve_one's extrapolate() with this block's threads: (f, g) moved 2^k times the Newton
  // direction (df, dg) further while the dual bound rises; the trial points are evaluated in
  // (f, g, ls)'s place, swapped with (ft, gt, lst) as primal_dual_step() swaps them.
  FASTPID_BODY bool extrapolate(double mu, double& lower) {
    double best = dual_bound(), times = 0.0, k = 1.0;
    for (int h = 0; h < detail::kExtrapolateDoublings; ++h) {
      k *= 2.0;
      for (int q = r; q < n1 * ny; q += nt) ft[q] = m1(q) ? f[q] + k * df[q] : f[q];
      for (int q = r; q < n2 * ny; q += nt) gt[q] = m2(q) ? g[q] + k * dg[q] : g[q];
      b.sync();
      log_s(ft, gt, lst);
      detail::fp_swap(f, ft);
      detail::fp_swap(g, gt);
      detail::fp_swap(ls, lst);
      const double bound = dual_bound();  // the block's: every thread takes the same branch
      detail::fp_swap(f, ft);
      detail::fp_swap(g, gt);
      detail::fp_swap(ls, lst);
      if (!(bound > best)) break;
      best = bound;
      times = k;
    }
    if (times == 0.0) return false;
    for (int q = r; q < n1 * ny; q += nt)
      if (m1(q)) f[q] += times * df[q];
    for (int q = r; q < n2 * ny; q += nt)
      if (m2(q)) g[q] += times * dg[q];
    b.sync();
    log_s(f, g, ls);
    const double mx = max_log_s();
    for (int q = r; q < n1 * ny; q += nt)
      if (m1(q)) f[q] -= mx + detail::kDomainMargin;
    b.sync();
    log_s(f, g, ls);
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) {
        tau[c] = -expm1(ls[c]);
        R[c] = mu / tau[c];
      }
    b.sync();
    lower = fp_max(lower, best);
    return true;
  }

  // solve_one's newton_direction(): factor_newton() then solve_newton(mu); returns dec^2.
  FASTPID_BODY double newton_direction(double mu) {
    factor_newton();
    return solve_newton(mu);
  }

  // The Newton system at the current point by the Schur complement on g, factorised.
  FASTPID_BODY void factor_newton() {
    barrier_weights();
    b.sync();
    jacobi_scalings();
    b.sync();
    for (int i = r; i < n1; i += nt) factor_f_block(i);
    b.sync();
    assemble_schur();
    b.sync();
    factor_schur();
  }

  // The direction toward the target mu + corr from the factorised system; returns dec^2.
  FASTPID_BODY double solve_newton(double mu) {
    gradient(mu);
    b.sync();
    for (int i = r; i < n1; i += nt) solve_f_block(i);
    b.sync();
    reduce_rhs();
    b.sync();
    forward_sweep();
    solve_transposed();
    return back_substitute();
  }

  // t, t2, oms, rp and W (see Layout) of this thread's cells at the current point.
  FASTPID_BODY void barrier_weights() {
    for (int c = r; c < n1 * n2; c += nt) {
      const int i = c / n2, j = c % n2;
      rp[c] = cell[c] ? -expm1(ls[c]) - tau[c] : 0.0;
      oms[c] = tau[c];
      t[c] = R[c];
      t2[c] = t[c] / oms[c];
      for (int y = 0; y < ny; ++y)
        W[c * ny + y] = adm(i, j, y) ? exp(logw(f, g, i, j, y)) : 0.0;
    }
  }

  // Per cell (i, j, y): t W, t W / tau, and the coefficients w = W sg and
  // d = sf sg t W of the f-g coupling of block i; the same products as solve_one stores.
  FASTPID_BODY double tw(int i, int j, int y) const {
    return t[i * n2 + j] * W[(i * n2 + j) * ny + y];
  }
  FASTPID_BODY double wt2(int i, int j, int y) const {
    return t2[i * n2 + j] * W[(i * n2 + j) * ny + y];
  }
  FASTPID_BODY double w_coef(int i, int j, int y) const {
    return W[(i * n2 + j) * ny + y] * sg[j * ny + y];
  }
  FASTPID_BODY double d_coef(int i, int j, int y) const {
    return sf[i * ny + y] * sg[j * ny + y] * tw(i, j, y);
  }
  // a_j[y] = sf[i][y] t W / tau: the rank-one part of the coupling.
  FASTPID_BODY double a_coef(int i, int j, int y) const { return sf[i * ny + y] * wt2(i, j, y); }

  // solve_one's jacobi_scalings(): 1 / sqrt(diag H) (0 on fixed unknowns).
  FASTPID_BODY void jacobi_scalings() {
    for (int k = r; k < n1 * ny; k += nt) {
      const int i = k / ny, y = k % ny;
      double tsum = 0, sd = 0;
      for (int j = 0; j < n2; ++j) {
        tsum += tw(i, j, y);
        sd += wt2(i, j, y) * W[(i * n2 + j) * ny + y];
      }
      sf[k] = fixed_f[k] ? 0.0 : 1.0 / sqrt(fp_max(sd + tsum, 1e-300));
    }
    for (int k = r; k < n2 * ny; k += nt) {
      const int j = k / ny, y = k % ny;
      double tsum = 0, sd = 0;
      for (int i = 0; i < n1; ++i) {
        tsum += tw(i, j, y);
        sd += wt2(i, j, y) * W[(i * n2 + j) * ny + y];
      }
      sg[k] = fixed_g[k] ? 0.0 : 1.0 / sqrt(fp_max(sd + tsum, 1e-300));
    }
  }

  // The weight (mu + corr + R soc - R rp) / tau of cell c in the right-hand side.
  FASTPID_BODY double cell_weight(double mu, int c) const {
    return (mu + corr[c] + t[c] * soc[c] - t[c] * rp[c]) / oms[c];
  }

  // solve_one's gradient(): right-hand sides of the primal-dual Newton system.
  FASTPID_BODY void gradient(double mu) {
    for (int k = r; k < n1 * ny; k += nt) {
      const int i = k / ny, y = k % ny;
      double sb = 0;
      for (int j = 0; j < n2; ++j) sb += cell_weight(mu, i * n2 + j) * W[(i * n2 + j) * ny + y];
      grad_f[k] = fixed_f[k] ? 0.0 : st.m.p1y[k] - sb;
    }
    for (int k = r; k < n2 * ny; k += nt) {
      const int j = k / ny, y = k % ny;
      double sb = 0;
      for (int i = 0; i < n1; ++i) sb += cell_weight(mu, i * n2 + j) * W[(i * n2 + j) * ny + y];
      grad_g[k] = fixed_g[k] ? 0.0 : st.m.p2y[k] - sb;
    }
  }

  // The f-block H_i (ny x ny) of x1 = i, scaled.
  FASTPID_BODY void assemble_f_block(int i, double* Hi) const {
    for (int y = 0; y < ny; ++y)
      for (int z = 0; z < ny; ++z) {
        double h = 0;
        for (int j = 0; j < n2; ++j) h += wt2(i, j, y) * W[(i * n2 + j) * ny + z];
        Hi[y * ny + z] = sf[i * ny + y] * h * sf[i * ny + z];
      }
    for (int y = 0; y < ny; ++y) {
      double s = 0;
      for (int j = 0; j < n2; ++j) s += tw(i, j, y);
      const int q = i * ny + y;
      Hi[y * ny + y] += sf[q] * sf[q] * s + (fixed_f[q] ? 1.0 : 0.0);
    }
  }

  // One thread's x1 = i: the factor of H_i, H_i^-1 and u_j = H_i^-1 a_j.
  FASTPID_BODY void factor_f_block(int i) {
    double* Hi = H + static_cast<size_t>(i) * ny * ny;
    double* hinv = Hinv + static_cast<size_t>(i) * ny * ny;
    double* ui = u + static_cast<size_t>(i) * n2 * ny;
    factor_small(Hi, ny, hcol + static_cast<size_t>(i) * ny,
                 [&](double* A) { assemble_f_block(i, A); });
    // Row z gets column z of the inverse; the transpose then stores it as solve_one does.
    for (int z = 0; z < ny; ++z) {
      double* e = hinv + z * ny;
      for (int y = 0; y < ny; ++y) e[y] = y == z ? 1.0 : 0.0;
      detail::cholesky_solve(Hi, ny, e);
    }
    for (int y = 0; y < ny; ++y)
      for (int z = 0; z < y; ++z) detail::fp_swap(hinv[y * ny + z], hinv[z * ny + y]);
    for (int j = 0; j < n2; ++j) {
      for (int y = 0; y < ny; ++y) ui[j * ny + y] = a_coef(i, j, y);
      detail::cholesky_solve(Hi, ny, ui + j * ny);
    }
  }

  // One thread's x1 = i: xf = H_i^-1 rf_i.
  FASTPID_BODY void solve_f_block(int i) {
    double* x = xf + static_cast<size_t>(i) * ny;
    for (int y = 0; y < ny; ++y) x[y] = grad_f[i * ny + y] * sf[i * ny + y];
    detail::cholesky_solve(H + static_cast<size_t>(i) * ny * ny, ny, x);
  }

  // solve_one's reduce_rhs(): rhs = rg - sum_i C_i^T H_i^-1 rf_i, each thread its own rows.
  FASTPID_BODY void reduce_rhs() const {
    for (int q = r; q < m; q += nt) {
      const int j = q / ny, z = q % ny;
      rhs[q] = grad_g[q] * sg[q];
      for (int i = 0; i < n1; ++i) {
        const double* x = xf + static_cast<size_t>(i) * ny;
        double ax = 0;  // a_j . xf
        for (int y = 0; y < ny; ++y) ax += a_coef(i, j, y) * x[y];
        rhs[q] -= w_coef(i, j, z) * ax + d_coef(i, j, z) * x[z];
      }
    }
  }

  // Row q of S (its lower triangle): the g-block, then C_i^T H_i^-1 C_i subtracted for each
  // x1 = i in turn, as solve_one's schur_g_block() and eliminate_f_block() do.
  // C_i[y, (j, z)] = a_j[y] w_j[z] + [y == z] d_j[y].
  FASTPID_BODY void assemble_schur_row(int q) const {
    const int j = q / ny, z = q % ny;
    double* row = S + static_cast<size_t>(q) * (q + 1) / 2;
    for (int c = 0; c <= q; ++c) row[c] = 0.0;
    for (int zp = 0; zp <= z; ++zp) {
      double h = 0;
      for (int i = 0; i < n1; ++i) h += wt2(i, j, z) * W[(i * n2 + j) * ny + zp];
      row[j * ny + zp] = sg[q] * h * sg[j * ny + zp];
    }
    double s = 0;
    for (int i = 0; i < n1; ++i) s += tw(i, j, z);
    row[q] += sg[q] * sg[q] * s + (fixed_g[q] ? 1.0 : 0.0);
    for (int i = 0; i < n1; ++i) {
      const double wz = w_coef(i, j, z), dz = d_coef(i, j, z);
      if (wz == 0.0 && dz == 0.0) continue;
      const double* ui = u + static_cast<size_t>(i) * n2 * ny;
      const double* hz = Hinv + (static_cast<size_t>(i) * ny + z) * ny;
      for (int jp = 0; jp <= j; ++jp) {
        double al = 0;  // a_j . u_jp
        for (int y = 0; y < ny; ++y) al += a_coef(i, j, y) * ui[jp * ny + y];
        const double* up = ui + jp * ny;
        const int last = jp == j ? z : ny - 1;
        for (int zp = 0; zp <= last; ++zp) {
          const double wp = w_coef(i, jp, zp), dp = d_coef(i, jp, zp);
          row[jp * ny + zp] -=
              wz * (al * wp + ui[j * ny + zp] * dp) + dz * (up[z] * wp + hz[zp] * dp);
        }
      }
    }
  }

  FASTPID_BODY void assemble_schur() const {
    for (int q = r; q < m; q += nt) assemble_schur_row(q);
  }

  FASTPID_BODY double* srow(int q) const { return S + static_cast<size_t>(q) * (q + 1) / 2; }

  // In-place Cholesky S = L L^T, right-looking: per column k every thread computes the pivot
  // itself (the same value, read after the same barrier; one thread stores it), the owners of
  // the trailing rows scale their entry of column k, and after a barrier they update their
  // rows. False, with S partly overwritten, at a non-positive pivot; all threads return there
  // together.
  FASTPID_BODY bool factor_attempt() const {
    for (int k = 0; k < m; ++k) {
      double* Sk = srow(k);
      const double pivot = Sk[k];
      if (!(pivot > 0.0)) return false;
      const double d = sqrt(pivot);
      for (int q = k + 1 + r; q < m; q += nt) col[q] = (srow(q)[k] /= d);
      b.sync();
      if (r == 0) Sk[k] = d;  // nobody reads it in this phase
      for (int q = k + 1 + r; q < m; q += nt) {
        double* Sq = srow(q);
        const double l = col[q];
        for (int c = k + 1; c <= q; ++c) Sq[c] -= l * col[c];
      }
      b.sync();
    }
    return true;
  }

  // S = L L^T as cholesky() does: a matrix singular to rounding is factorised with a 1e-12
  // ridge, one still not positive replaced by the identity (the Jacobi-scaled gradient as the
  // direction). The retries reassemble S, after a barrier: other threads may still read the
  // failed pivot.
  FASTPID_BODY void factor_schur() const {
    if (factor_attempt()) return;
    b.sync();
    assemble_schur();
    for (int q = r; q < m; q += nt) srow(q)[q] += 1e-12;
    b.sync();
    if (factor_attempt()) return;
    b.sync();
    for (int q = r; q < m; q += nt) {
      double* row = srow(q);
      for (int c = 0; c <= q; ++c) row[c] = c == q ? 1.0 : 0.0;
    }
    b.sync();
  }

  // rhs <- L^-1 rhs (the forward sweep): per column k every thread computes rhs[k] / L[k][k]
  // itself (rhs[k] is final once column k - 1 is done), the owners of the rows below update
  // theirs; one barrier per column, and the divisions stored at the end.
  FASTPID_BODY void forward_sweep() const {
    for (int k = 0; k < m; ++k) {
      const double yk = rhs[k] / srow(k)[k];
      for (int q = k + 1 + r; q < m; q += nt) rhs[q] -= srow(q)[k] * yk;
      b.sync();
    }
    for (int k = r; k < m; k += nt) rhs[k] /= srow(k)[k];
    b.sync();
  }

  // yg = L^-T rhs (the backward sweep): per row q every thread computes yg[q] itself, then
  // the owners of the rows above update theirs; one barrier per row.
  FASTPID_BODY void solve_transposed() const {
    for (int q = m - 1; q >= 0; --q) {
      const double* Sq = srow(q);
      const double x = rhs[q] / Sq[q];
      if (r == 0) yg[q] = x;
      for (int p = r; p < q; p += nt) rhs[p] -= Sq[p] * x;
      b.sync();
    }
  }

  // (df, dg) from yg and the kept blocks (the scaling undone); returns dec^2. df[i][y] =
  // sf (xf - sum_j u_j (w_j . yg_j) - H_i^-1 sum_j d_j yg_j)[y], each thread its own (i, y).
  FASTPID_BODY double back_substitute() {
    double dec2 = 0;
    for (int q = r; q < m; q += nt) {
      dg[q] = yg[q] * sg[q];
      dec2 += grad_g[q] * dg[q];
    }
    for (int k = r; k < n1 * ny; k += nt) {
      const int i = k / ny, y = k % ny;
      const double* ui = u + static_cast<size_t>(i) * n2 * ny;
      const double* hi = Hinv + static_cast<size_t>(i) * ny * ny;
      double yf = xf[k];
      for (int j = 0; j < n2; ++j) {
        double wy = 0;
        for (int z = 0; z < ny; ++z) wy += w_coef(i, j, z) * yg[j * ny + z];
        yf -= ui[j * ny + y] * wy;
      }
      double s = 0;
      for (int z = 0; z < ny; ++z) {
        double dy = 0;
        for (int j = 0; j < n2; ++j) dy += d_coef(i, j, z) * yg[j * ny + z];
        s += hi[y * ny + z] * dy;
      }
      df[k] = (yf - s) * sf[k];
      dec2 += grad_f[k] * df[k];
    }
    return b.sum(dec2);
  }

  // solve_one's change_of_s() for cell c.
  FASTPID_BODY double change_of_s(int c) const {
    const int i = c / n2, j = c % n2;
    double ds = 0;
    for (int y = 0; y < ny; ++y) ds += W[c * ny + y] * (df[i * ny + y] + dg[j * ny + y]);
    return ds;
  }

  // The second-order change of cell c's s along the direction, sum_y W (df + dg)^2 / 2
  // (solve_one's change_of_s() with its curvature; here a pass of its own).
  FASTPID_BODY double curvature_of_s(int c) const {
    const int i = c / n2, j = c % n2;
    double q = 0;
    for (int y = 0; y < ny; ++y) {
      const double d = df[i * ny + y] + dg[j * ny + y];
      q += W[c * ny + y] * d * d;
    }
    return 0.5 * q;
  }

  // solve_one's steps_to_target() with this block's threads; returns the block's limits.
  FASTPID_BODY detail::StepLimits steps_to_target(double mu) {
    double to_tau = HUGE_VAL, to_r = HUGE_VAL;
    for (int c = r; c < n1 * n2; c += nt) {
      if (!cell[c]) continue;
      dtau[c] = rp[c] - change_of_s(c) - soc[c];
      dR[c] = (mu + corr[c] - R[c] * tau[c] - R[c] * dtau[c]) / tau[c];
      if (dtau[c] < 0) to_tau = fp_min(to_tau, -tau[c] / dtau[c]);
      if (dR[c] < 0) to_r = fp_min(to_r, -R[c] / dR[c]);
    }
    const double lim_tau = -b.max(-to_tau);  // two reductions, in the same order everywhere
    const double lim_r = -b.max(-to_r);
    return {lim_tau, lim_r};
  }

  // solve_one's predict() with this block's threads (corr and soc are 0 on entry).
  FASTPID_BODY double predict(double fallback, double cap, double mu_floor) {
    const double now = mean_complementarity();
    solve_newton(0.0);
    const detail::StepLimits to = steps_to_target(0.0);
    const double step = fp_min(1.0, to.tau), step_r = fp_min(1.0, to.R);
    double sum = 0;
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) sum += (R[c] + step_r * dR[c]) * (tau[c] + step * dtau[c]);
    const double ratio = b.sum(sum) / fp_max(cell_count, 1) / now;
    if (!(ratio >= 0.0 && ratio < HUGE_VAL)) return fallback;
    const double mu = fp_min(detail::corrector_mu(now, ratio, mu_floor), cap);
    if (mu > mu_floor)
      for (int c = r; c < n1 * n2; c += nt) {
        corr[c] = cell[c] ? -dR[c] * dtau[c] : 0.0;
        soc[c] = cell[c] ? curvature_of_s(c) : 0.0;
      }
    b.sync();
    return mu;
  }

  // solve_one's primal_dual_step() with this block's threads (W and rp of the old point);
  // -1: a barrier step must stand in.
  FASTPID_BODY double primal_dual_step(double mu, double dec2) {
    if (!isfinite(dec2)) return 0.0;  // dec2 is the block's sum: every thread agrees
    const detail::StepLimits to = steps_to_target(mu);
    const double alpha = fp_min(1.0, detail::kFractionToBoundary * to.tau);
    const double alpha_r = fp_min(1.0, detail::kFractionToBoundary * to.R);
    if (!(alpha > 0.0)) return 0.0;
    if (alpha < detail::kMinStep || !(dec2 > 0.0)) return -1.0;
    for (int k = r; k < n1 * ny; k += nt) ft[k] = f[k] + alpha * df[k];
    for (int k = r; k < n2 * ny; k += nt) gt[k] = g[k] + alpha * dg[k];
    b.sync();
    log_s(ft, gt, lst);
    double outside = 0.0;
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c] && !(lst[c] <= detail::kMaxLogS)) outside = 1.0;  // NaN too
    if (b.max(outside) > 0.0) return -1.0;
    detail::fp_swap(f, ft);
    detail::fp_swap(g, gt);
    detail::fp_swap(ls, lst);
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) {
        tau[c] += alpha * dtau[c];
        R[c] += alpha_r * dR[c];
      }
    return alpha;
  }

  // solve_one's barrier_step() with this block's threads.
  FASTPID_BODY double barrier_step(double mu) {
    const double mx = max_log_s();
    if (mx >= 0.0) {
      for (int k = r; k < n1 * ny; k += nt)
        if (m1(k)) f[k] -= mx + detail::kDomainMargin;
      b.sync();
      log_s(f, g, ls);
    }
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) tau[c] = -expm1(ls[c]);
    b.sync();
    const double dec2 = newton_direction(mu);
    const double alpha = line_search(mu, dec2);
    multiplier_step(mu, alpha);
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) tau[c] = -expm1(ls[c]);
    return alpha;
  }

  // Backtracking (Armijo) step along (df, dg) that keeps max s < 1; moves (f, g, ls) to the
  // accepted point and returns the step length (0: rejected, nothing moves).
  FASTPID_BODY double line_search(double mu, double dec2) {
    const double phi0 = barrier_value(ls, f, g, mu);
    const double slack = 1e-13 * (1.0 + fabs(phi0));
    double longest = 0.0;  // the direction's largest move of an admissible potential
    for (int k = r; k < n1 * ny; k += nt)
      if (m1(k)) longest = fp_max(longest, fabs(df[k]));
    for (int k = r; k < n2 * ny; k += nt)
      if (m2(k)) longest = fp_max(longest, fabs(dg[k]));
    double alpha = detail::first_trial(b.max(longest));
    for (int h = 0; h < 60; ++h) {
      for (int k = r; k < n1 * ny; k += nt) ft[k] = f[k] + alpha * df[k];
      for (int k = r; k < n2 * ny; k += nt) gt[k] = g[k] + alpha * dg[k];
      b.sync();
      log_s(ft, gt, lst);
      if (barrier_value(lst, ft, gt, mu) >= phi0 + 0.01 * alpha * dec2 - slack) {
        detail::fp_swap(f, ft);
        detail::fp_swap(g, gt);
        detail::fp_swap(ls, lst);
        return alpha;
      }
      alpha = detail::shorter_step(alpha);
    }
    return 0.0;
  }

  // solve_one's multiplier_step() for this thread's cells (W and oms still of the old point).
  FASTPID_BODY void multiplier_step(double mu, double alpha) {
    for (int c = r; c < n1 * n2; c += nt) {
      if (!cell[c]) continue;
      const double ds = change_of_s(c);
      const double t_old = oms[c], rc = R[c];
      const double stepped = fp_max(rc + (mu - rc * t_old + rc * ds) / t_old, 0.01 * rc);
      const double centre = mu / -expm1(ls[c]);
      R[c] = alpha > 0 ? fp_min(fp_max(stepped, centre / detail::kKappa), detail::kKappa * centre)
                       : centre;
    }
  }

  // solve_one's mean_complementarity(): the mean of R tau over the cells.
  FASTPID_BODY double mean_complementarity() const {
    double sum = 0;
    for (int c = r; c < n1 * n2; c += nt)
      if (cell[c]) sum += R[c] * tau[c];
    return b.sum(sum) / fp_max(cell_count, 1);
  }

  // Primal bound near a centre: Sinkhorn sweeps on the kernel R, from g.
  FASTPID_BODY double barrier_primal_bound(int sweeps, double shrink_below = 0.0) {
    for (int c = r; c < n1 * n2; c += nt)
      lr[c] = cell[c] ? log(R[c] < shrink_below ? detail::kSupportShrink * R[c] : R[c]) : kNegInf;
    for (int k = r; k < n2 * ny; k += nt) gp[k] = m2(k) ? g[k] : kNegInf;
    b.sync();
    update_rows(b, n1, n2, ny, st.m.p1y, st.la, lr, gp, fp);
    b.sync();
    for (int s = 1; s < sweeps; ++s) {
      update_columns(b, n1, n2, ny, st.m.p2y, st.lb, lr, fp, gp);
      b.sync();
      update_rows(b, n1, n2, ny, st.m.p1y, st.la, lr, gp, fp);
      b.sync();
    }
    coupling(lr, fp, gp);
    b.sync();
    return primal_bound();
  }
};

}  // namespace block_solver

// Doubles of `work` the block solver needs for one problem (masks included).
FASTPID_BOTH int64_t solve_block_work(int n1, int n2, int ny) {
  detail::Arena counter;  // no buffer: only counts
  const block_solver::Layout layout(n1, n2, ny, counter);
  return static_cast<int64_t>(counter.used);
}

// Solves one problem P[n1][n2][ny] (normalised, C order) with the threads of block b, as
// solve_one() does: `work` holds solve_block_work() doubles shared by the block (any contents,
// 8-byte aligned). Writes *lower, *upper, *iterations (one thread) and f[n1*ny], g[n2*ny]
// (-inf on masked entries); the caller synchronises before reusing `work`.
template <class Blk>
FASTPID_BODY void solve_block_body(const Blk& b, const double* P, int n1, int n2, int ny,
                                   const SolveOptions& opt, double* work, double* lower,
                                   double* upper, double* f, double* g, int64_t* iterations) {
  detail::Arena arena;
  arena.base = work;
  const block_solver::Layout layout(n1, n2, ny, arena);
  const block_solver::WarmEnd warm_end{detail::warm_block(opt.newton, opt.warm_steps), opt.tol};
  const AlternationState<double> st =
      alternate(b, P, n1, n2, ny, opt.warm_steps, opt.omega, layout.alternation, warm_end);
  block_solver::Solver<Blk> solver(b, opt, layout, st, P, n1, n2, ny);
  double lo = 0, up = 0;
  int64_t it = 0;
  solver.run(lo, up, it);
  if (b.rank() == 0) {
    *lower = lo;
    *upper = up;
    *iterations = it;
  }
  solver.write_potentials(f, g);
}

// The block solver's upper bound from the coupling Q[n1][n2][ny] of the problem P (both C
// order, P normalised): I of Q's feasible rounding, +inf where Q has a NaN or infinite entry.
// `work` as for solve_block_body(); one thread writes *bound.
template <class Blk>
FASTPID_BODY void primal_bound_block_body(const Blk& b, const double* P, const double* Q, int n1,
                                          int n2, int ny, double* work, double* bound) {
  detail::Arena arena;
  arena.base = work;
  const block_solver::Layout layout(n1, n2, ny, arena);
  const AlternationState<double> st = alternate(b, P, n1, n2, ny, 0, 1.0, layout.alternation);
  const SolveOptions opt{};
  block_solver::Solver<Blk> solver(b, opt, layout, st, P, n1, n2, ny);
  const double v = solver.bound_of(Q);
  if (b.rank() == 0) *bound = v;
}

}  // namespace fastpid::cuda
