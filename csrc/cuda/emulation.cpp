// The CUDA kernel bodies run on host threads (one std::thread per CUDA thread, real barriers),
// exposed as fastpid._C.emulate so that the tests check the kernels' arithmetic, indexing and
// synchronisation against the PyTorch reference on machines without a GPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <vector>

#include "kernels.hpp"
#include "solver_block.hpp"

namespace py = pybind11;
using fastpid::cuda::HostBlock;
using fastpid::cuda::run_host_block;

namespace {

template <class T>
using Array = py::array_t<T, py::array::c_style>;
using Codes = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void check_threads(int threads) {
  if (threads < 1 || threads > 1024)
    throw std::invalid_argument("threads must be in [1, 1024]; got " + std::to_string(threads));
}

const int64_t* codes_or_null(const std::optional<Codes>& a) { return a ? a->data() : nullptr; }

// The kernel bodies index the output with the codes unchecked (on a GPU, fastpid.joint has
// checked them), so every entry point here checks sizes and ranges before touching memory.
void check_sizes(int n1, int n2, int ny, int G) {
  if (n1 < 1 || n2 < 1 || ny < 1 || G < 1)
    throw std::invalid_argument("n1, n2, ny and G must be >= 1; got " + std::to_string(n1) +
                                ", " + std::to_string(n2) + ", " + std::to_string(ny) + ", " +
                                std::to_string(G));
}

void check_codes(const Codes& a, int64_t N, const char* name, int64_t size) {
  if (a.ndim() != 1 || a.size() != N)
    throw std::invalid_argument(std::string(name) + " must be a 1-D array of the N = " +
                                std::to_string(N) + " samples; got " + std::to_string(a.size()) +
                                " entries in " + std::to_string(a.ndim()) + " dimension(s)");
  const int64_t* v = a.data();
  for (int64_t n = 0; n < N; ++n)
    if (v[n] < 0 || v[n] >= size)
      throw std::out_of_range(std::string(name) + "[" + std::to_string(n) + "] = " +
                              std::to_string(v[n]) + " is outside [0, " + std::to_string(size) +
                              ")");
}

void check_length(const py::array& a, int64_t N, const char* name) {
  if (a.ndim() != 1 || a.size() != N)
    throw std::invalid_argument(std::string(name) + " must be a 1-D array of the N = " +
                                std::to_string(N) + " samples; got shape of " +
                                std::to_string(a.size()) + " entries");
}

// A grid of `blocks` blocks of `threads` threads, run one block after another; with
// private_hist each block has its own zeroed histogram of the `bins` outputs (the kernels'
// shared memory), else the samples go straight to the output.
template <class T, class Body>
void run_joint_grid(int blocks, int threads, bool private_hist, int64_t bins, Body body) {
  if (blocks < 1) throw std::invalid_argument("blocks must be >= 1");
  check_threads(threads);
  std::vector<T> hist(private_hist ? bins : 0);
  for (int blk = 0; blk < blocks; ++blk)
    run_host_block(threads, [&](HostBlock b) {
      body(b, int64_t(blk) * threads + b.rank(), int64_t(blocks) * threads,
           private_hist ? hist.data() : nullptr);
    });
}

template <class T>
py::array joint_codes(Codes x1, Codes x2, Codes y, std::optional<Codes> groups,
                      std::optional<py::array> weights, int n1, int n2, int ny, int G,
                      int blocks, int threads, bool private_hist) {
  check_sizes(n1, n2, ny, G);
  const int64_t N = x1.size();
  check_codes(x1, N, "x1", n1);
  check_codes(x2, N, "x2", n2);
  check_codes(y, N, "y", ny);
  if (groups) check_codes(*groups, N, "groups", G);
  Array<T> out({G, n1, n2, ny});
  std::fill(out.mutable_data(), out.mutable_data() + out.size(), T(0));
  std::optional<py::array_t<T, py::array::c_style | py::array::forcecast>> w;
  if (weights) w = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(*weights);
  if (w) check_length(*w, N, "weights");
  const int64_t bins = out.size();
  T* o = out.mutable_data();
  run_joint_grid<T>(blocks, threads, private_hist, bins, [&](HostBlock b, int64_t start,
                                                             int64_t stride, T* hist) {
    fastpid::cuda::joint_codes_body(b, start, stride, N, x1.data(), x2.data(), y.data(),
                                    codes_or_null(groups), w ? w->data() : nullptr, n1, n2, ny,
                                    bins, hist, o);
  });
  return out;
}

template <class T>
Array<T> joint_soft(Array<T> p1, Array<T> p2, Codes y, std::optional<Codes> groups,
                    std::optional<Array<T>> weights, int ny, int G, int blocks, int threads,
                    bool private_hist) {
  if (p1.ndim() != 2 || p2.ndim() != 2 || p2.shape(0) != p1.shape(0))
    throw std::invalid_argument("p1 and p2 must be 2-D arrays (N, n1) and (N, n2) of the same N");
  const int64_t N = p1.shape(0);
  const int n1 = static_cast<int>(p1.shape(1)), n2 = static_cast<int>(p2.shape(1));
  check_sizes(n1, n2, ny, G);
  check_codes(y, N, "y", ny);
  if (groups) check_codes(*groups, N, "groups", G);
  if (weights) check_length(*weights, N, "weights");
  Array<T> out({G, n1, n2, ny});
  std::fill(out.mutable_data(), out.mutable_data() + out.size(), T(0));
  const int64_t bins = out.size();
  T* o = out.mutable_data();
  const T* w = weights ? weights->data() : nullptr;
  run_joint_grid<T>(blocks, threads, private_hist, bins, [&](HostBlock b, int64_t start,
                                                             int64_t stride, T* hist) {
    fastpid::cuda::joint_soft_body(b, start, stride, N, p1.data(), p2.data(), y.data(),
                                   codes_or_null(groups), w, n1, n2, ny, bins, hist, o);
  });
  return out;
}

template <class T>
Array<T> closed_forms(Array<T> P, int threads) {
  check_threads(threads);
  if (P.ndim() != 4) throw std::invalid_argument("P must have shape (B, n1, n2, ny)");
  const int64_t B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  Array<T> out({B, int64_t(4)});
  std::vector<T> work(fastpid::cuda::Marginals<T>::size(n1, n2, ny));
  for (int64_t p = 0; p < B; ++p)
    run_host_block(threads, [&](HostBlock b) {
      fastpid::cuda::closed_forms_body(b, P.data() + p * n1 * n2 * ny, n1, n2, ny, work.data(),
                                       out.mutable_data() + 4 * p);
    });
  return out;
}

template <class T>
py::tuple alternation(Array<T> P, int steps, double omega, int threads) {
  check_threads(threads);
  if (P.ndim() != 4) throw std::invalid_argument("P must have shape (B, n1, n2, ny)");
  const int64_t B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  Array<T> f({B, int64_t(n1), int64_t(ny)}), g({B, int64_t(n2), int64_t(ny)}),
      logR({B, int64_t(n1), int64_t(n2)});
  std::vector<T> work(fastpid::cuda::alternation_work(n1, n2, ny));
  for (int64_t p = 0; p < B; ++p)
    run_host_block(threads, [&](HostBlock b) {
      fastpid::cuda::alternation_body(b, P.data() + p * n1 * n2 * ny, n1, n2, ny, steps,
                                       static_cast<T>(omega), work.data(),
                                       f.mutable_data() + p * n1 * ny,
                                       g.mutable_data() + p * n2 * ny,
                                       logR.mutable_data() + p * n1 * n2);
    });
  return py::make_tuple(f, g, logR);
}

// The block solver on B problems in turn, each on `threads` host threads; returns
// (lower, upper, f, g, iterations) as fastpid._C.solve does.
py::tuple solve(py::array_t<double, py::array::c_style | py::array::forcecast> P,
                const fastpid::SolveOptions& opt, int threads) {
  check_threads(threads);
  if (P.ndim() != 4) throw std::invalid_argument("P must have shape (B, n1, n2, ny)");
  const int64_t B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  Array<double> lower(B), upper(B), f({B, int64_t(n1), int64_t(ny)}),
      g({B, int64_t(n2), int64_t(ny)});
  Array<int64_t> iterations(B);
  std::vector<double> work(fastpid::cuda::solve_block_work(n1, n2, ny));
  for (int64_t p = 0; p < B; ++p)
    run_host_block(threads, [&](HostBlock b) {
      fastpid::cuda::solve_block_body(b, P.data() + p * n1 * n2 * ny, n1, n2, ny, opt,
                                      work.data(), lower.mutable_data() + p,
                                      upper.mutable_data() + p, f.mutable_data() + p * n1 * ny,
                                      g.mutable_data() + p * n2 * ny,
                                      iterations.mutable_data() + p);
    });
  return py::make_tuple(lower, upper, f, g, iterations);
}

// The block solver's upper bound from each coupling Q[p] of the problem P[p], as its barrier
// method computes it (one block of `threads` host threads per problem).
Array<double> primal_bound(py::array_t<double, py::array::c_style | py::array::forcecast> P,
                           py::array_t<double, py::array::c_style | py::array::forcecast> Q,
                           int threads) {
  check_threads(threads);
  if (P.ndim() != 4) throw std::invalid_argument("P must have shape (B, n1, n2, ny)");
  for (int d = 0; d < 4; ++d)
    if (Q.ndim() != 4 || Q.shape(d) != P.shape(d))
      throw std::invalid_argument("Q must have the shape of P");
  const int64_t B = P.shape(0);
  const int n1 = static_cast<int>(P.shape(1)), n2 = static_cast<int>(P.shape(2)),
            ny = static_cast<int>(P.shape(3));
  Array<double> bound(B);
  std::vector<double> work(fastpid::cuda::solve_block_work(n1, n2, ny));
  const int64_t cells = int64_t(n1) * n2 * ny;
  for (int64_t p = 0; p < B; ++p)
    run_host_block(threads, [&](HostBlock b) {
      fastpid::cuda::primal_bound_block_body(b, P.data() + p * cells, Q.data() + p * cells, n1, n2,
                                             ny, work.data(), bound.mutable_data() + p);
    });
  return bound;
}

template <class T>
void register_dtype(py::module_& e) {
  e.def("joint_soft", &joint_soft<T>, py::arg("p1"), py::arg("p2"), py::arg("y"),
        py::arg("groups"), py::arg("weights"), py::arg("ny"), py::arg("G"), py::arg("blocks"),
        py::arg("threads"), py::arg("private_hist"));
  e.def("closed_forms", &closed_forms<T>, py::arg("P"), py::arg("threads"));
  e.def("alternation", &alternation<T>, py::arg("P"), py::arg("steps"), py::arg("omega"),
        py::arg("threads"));
}

}  // namespace

void register_emulation(py::module_& m) {
  py::module_ e = m.def_submodule(
      "emulate", "The CUDA kernel bodies on host threads (one per CUDA thread), for the tests.");
  // float64 first: pybind11 tries overloads in order and a float64 array must not be cast.
  register_dtype<double>(e);
  register_dtype<float>(e);
  e.def("solve", &solve, py::arg("P"), py::arg("options"), py::arg("threads"),
        "The certified solver, one thread block per problem (float64).");
  e.def("primal_bound", &primal_bound, py::arg("P"), py::arg("Q"), py::arg("threads"),
        "The block solver's upper bound from a coupling Q of each problem (float64).");
  e.def("solve_work", &fastpid::cuda::solve_block_work, py::arg("n1"), py::arg("n2"),
        py::arg("ny"), "Doubles of (shared) workspace the block solver needs per problem.");
  // Codes carry no float dtype: the output's is chosen by f64.
  e.def(
      "joint_codes",
      [](Codes x1, Codes x2, Codes y, std::optional<Codes> groups,
         std::optional<py::array> weights, int n1, int n2, int ny, int G, int blocks,
         int threads, bool private_hist, bool f64) {
        return f64 ? joint_codes<double>(x1, x2, y, groups, weights, n1, n2, ny, G, blocks,
                                         threads, private_hist)
                   : joint_codes<float>(x1, x2, y, groups, weights, n1, n2, ny, G, blocks,
                                        threads, private_hist);
      },
      py::arg("x1"), py::arg("x2"), py::arg("y"), py::arg("groups"), py::arg("weights"),
      py::arg("n1"), py::arg("n2"), py::arg("ny"), py::arg("G"), py::arg("blocks"),
      py::arg("threads"), py::arg("private_hist"), py::arg("f64"));
}
