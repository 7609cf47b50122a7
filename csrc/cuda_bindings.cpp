// Python bindings of the CUDA launchers (cuda/launch.hpp). Arrays arrive as device pointers
// (torch's data_ptr(), 0 for "none") and a stream handle; fastpid/cuda.py checks shapes, dtypes
// and devices before calling. A build without CUDA keeps the same functions, which say why
// they cannot run.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastpid_build_config.h"
#if FASTPID_WITH_CUDA
#include "cuda/launch.hpp"
#endif

namespace py = pybind11;

namespace {

template <class T>
T* ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

#if FASTPID_WITH_CUDA
namespace cu = fastpid::cuda;

void check(const char* error, const char* what) {
  if (error) throw std::runtime_error(std::string("fastpid CUDA ") + what + ": " + error);
}

py::tuple device_count() {
  int count = 0;
  const char* error = cu::device_count(&count);
  return py::make_tuple(count, error ? std::string(error) : std::string());
}

void joint_codes(bool f64, int64_t N, uintptr_t x1, uintptr_t x2, uintptr_t y, uintptr_t groups,
                 uintptr_t w, int n1, int n2, int ny, int G, uintptr_t out, uintptr_t stream) {
  check(cu::joint_codes(f64, N, ptr<const int64_t>(x1), ptr<const int64_t>(x2),
                        ptr<const int64_t>(y), ptr<const int64_t>(groups), ptr<const void>(w), n1,
                        n2, ny, G, ptr<void>(out), stream),
        "joint_codes");
}

void joint_soft(bool f64, int64_t N, uintptr_t p1, uintptr_t p2, uintptr_t y, uintptr_t groups,
                uintptr_t w, int n1, int n2, int ny, int G, uintptr_t out, uintptr_t stream) {
  check(cu::joint_soft(f64, N, ptr<const void>(p1), ptr<const void>(p2), ptr<const int64_t>(y),
                       ptr<const int64_t>(groups), ptr<const void>(w), n1, n2, ny, G,
                       ptr<void>(out), stream),
        "joint_soft");
}

void closed_forms(bool f64, int64_t B, uintptr_t P, int n1, int n2, int ny, uintptr_t out,
                  uintptr_t work, uintptr_t stream) {
  check(cu::closed_forms(f64, B, ptr<const void>(P), n1, n2, ny, ptr<void>(out), ptr<void>(work),
                         stream),
        "closed_forms");
}

void alternation(bool f64, int64_t B, uintptr_t P, int n1, int n2, int ny, int steps,
                 double omega, uintptr_t f, uintptr_t g, uintptr_t logR, uintptr_t work,
                 uintptr_t stream) {
  check(cu::alternation(f64, B, ptr<const void>(P), n1, n2, ny, steps, omega, ptr<void>(f),
                        ptr<void>(g), ptr<void>(logR), ptr<void>(work), stream),
        "alternation");
}

int64_t solve_work(int n1, int n2, int ny) {
  int64_t doubles = 0;
  check(cu::solve_work(n1, n2, ny, &doubles), "solve_work");
  return doubles;
}

void solve(int64_t B, uintptr_t P, int n1, int n2, int ny, const fastpid::SolveOptions& opt,
           uintptr_t work, uintptr_t lower, uintptr_t upper, uintptr_t f, uintptr_t g,
           uintptr_t iterations, uintptr_t stream) {
  check(cu::solve(B, ptr<const double>(P), n1, n2, ny, opt, ptr<double>(work),
                  ptr<double>(lower), ptr<double>(upper), ptr<double>(f), ptr<double>(g),
                  ptr<int64_t>(iterations), stream),
        "solve");
}
#else
py::tuple device_count() {
  return py::make_tuple(0, std::string("the extension was built without CUDA (no CUDA compiler "
                                       "was found, or FASTPID_CUDA=0)"));
}
#endif

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_device_count", &device_count,
        "(number of CUDA devices this build can use, why none) -- the reason is empty when the "
        "count is usable.");
#if FASTPID_WITH_CUDA
  m.def("cuda_closed_forms_work", &fastpid::cuda::closed_forms_global_work);
  m.def("cuda_alternation_work", &fastpid::cuda::alternation_global_work);
  m.def("cuda_joint_codes", &joint_codes);
  m.def("cuda_joint_soft", &joint_soft);
  m.def("cuda_closed_forms", &closed_forms);
  m.def("cuda_alternation", &alternation);
  m.def("cuda_solve_work", &solve_work);
  m.def("cuda_solve", &solve);
#endif
}
