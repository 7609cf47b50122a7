// fastpid._C: the native extension: how it was built, the CPU solver (solver_bindings.cpp),
// the CUDA kernels (cuda_bindings.cpp) and their host emulation (cuda/emulation.cpp).
#include <pybind11/pybind11.h>

#include "fastpid_build_config.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

long cplusplus_value() {
#if defined(_MSVC_LANG)
  return static_cast<long>(_MSVC_LANG);  // MSVC reports __cplusplus == 199711L by default
#else
  return static_cast<long>(__cplusplus);
#endif
}

int cxx_standard_year(long value) {
  if (value >= 202302L) return 23;
  if (value >= 202002L) return 20;
  if (value >= 201703L) return 17;
  if (value >= 201402L) return 14;
  return 11;
}

py::dict build_info() {
  py::dict info;
  info["native"] = true;
  info["version"] = FASTPID_VERSION;
  info["compiler_id"] = FASTPID_CXX_COMPILER_ID;
  info["compiler_version"] = FASTPID_CXX_COMPILER_VERSION;
  info["cxx_standard"] = cxx_standard_year(cplusplus_value());
  info["cplusplus"] = cplusplus_value();
  info["build_type"] = FASTPID_BUILD_TYPE;
  info["cmake_version"] = FASTPID_CMAKE_VERSION;
  info["system"] = FASTPID_SYSTEM;
  info["pybind11_version"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." +
                             std::to_string(PYBIND11_VERSION_MINOR) + "." +
                             std::to_string(PYBIND11_VERSION_PATCH);

  info["cuda_compiled"] = static_cast<bool>(FASTPID_WITH_CUDA);
  info["cuda_searched"] = static_cast<bool>(FASTPID_CUDA_SEARCHED);
  info["cuda_compiler_found"] = static_cast<bool>(FASTPID_CUDA_FOUND);
  info["cuda_compiler_version"] = FASTPID_CUDA_COMPILER_VERSION;
  info["cuda_architectures"] = FASTPID_CUDA_ARCHITECTURES;

  // What the CPU code was compiled for: a module built with -march=native (the default)
  // needs its instructions on every machine that imports it; they are listed in _C.isa
  // (CMakeLists.txt), which fastpid._build_info reads for build_info()["cpu_instructions"].
#ifdef FASTPID_MARCH_NATIVE
  info["march_native"] = true;
#else
  info["march_native"] = false;
#endif

#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<long>(_OPENMP);
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = py::none();
  info["openmp_max_threads"] = py::none();
#endif
  return info;
}

}  // namespace

void register_solver(py::module_& m);
void register_cuda(py::module_& m);
void register_emulation(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastpid native extension: build information, the C++ CPU solver and the CUDA kernels";
  m.attr("__version__") = FASTPID_VERSION;
  m.def("build_info", &build_info,
        "Return a dict describing how this extension was compiled: version, "
        "compiler, C++ standard, OpenMP, and whether CUDA was found/compiled.");
  register_solver(m);
  register_cuda(m);
  register_emulation(m);
}
