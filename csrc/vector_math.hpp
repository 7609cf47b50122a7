// exp, expm1 and log for the solver's hot loops, written so that the compiler can vectorise a loop
// that calls them (no branches, no calls, no table lookups); within 1 ulp of the correctly
// rounded result on normal inputs (expm1: 1.5). In device code they are CUDA's own.
//
// exp: x = n ln2 + r, |r| <= ln2 / 2 (Cody and Waite's two-part ln2, so that r is exact),
// e^r by its Taylor series to r^13 (remainder below 1e-17 relative), times 2^n as two
// powers of two (pow2_halves()).
// log: x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f);
// log(1 + f) = 2 atanh(s) = f - s (f - T) with T = 2 (s^2/3 + s^4/5 + ... + s^20/21)
// (remainder below 1e-17 relative for |s| <= 0.1716), plus e ln2.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

// Functions compiled for both host and device (solver_core.hpp uses it too).
#if defined(__CUDACC__)
#define FASTPID_HD __host__ __device__
#else
#define FASTPID_HD
#endif

// Host code inlines the two always: GCC declined to inline them into some of the solver's
// larger functions, and a call in an `omp simd` loop keeps the loop scalar.
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
#define FASTPID_ALWAYS_INLINE __attribute__((always_inline))
#else
#define FASTPID_ALWAYS_INLINE
#endif

namespace fastpid {

// Neumaier's compensated sum. An entropy summed over many entries (10^6 for 100x100x100) by
// plain running sums drifts by about sqrt(n) roundings of its total (2e-14 nats measured), far
// beyond the few ulps that a certified gap leaves out; the compensation keeps about one.
template <class T>
struct CompensatedSum {
  T sum = 0, err = 0;
  FASTPID_HD void add(T x) {
    const T t = sum + x;
    err += ((sum < 0 ? -sum : sum) >= (x < 0 ? -x : x)) ? (sum - t) + x : (x - t) + sum;
    sum = t;
  }
  FASTPID_HD T value() const { return sum + err; }
};

namespace detail {

#if !defined(__CUDA_ARCH__)
inline double bits_to_double(uint64_t b) {
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}
inline uint64_t double_to_bits(double d) {
  uint64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// ln2 = kLn2Hi + kLn2Lo, kLn2Hi with 21 significant bits (n kLn2Hi is exact for |n| < 2^32).
constexpr double kLn2Hi = 0x1.62e42p-1;
constexpr double kLn2Lo = 0x1.fdf473de6af28p-22;
constexpr double kLog2e = 0x1.71547652b82fep0;
// Adding then subtracting kRound rounds a double of magnitude below 2^51 to an integer, and
// the low bits of the sum are that integer plus kRound's (zero) low bits.
constexpr double kRound = 0x1.8p52;

// 1/k! as a constant (k! is exact in double up to 18!; 19! rounds once, like its literal).
constexpr double inverse_factorial(int k) {
  double f = 1.0;
  for (int i = 2; i <= k; ++i) f *= i;
  return 1.0 / f;
}

// sum over k = Lo .. Hi of r^(k - Lo) / k!, by Horner from the highest term.
template <int Lo, int Hi>
FASTPID_ALWAYS_INLINE inline double exp_series(double r) {
  constexpr double c = inverse_factorial(Lo);
  if constexpr (Lo == Hi)
    return c;
  else
    return exp_series<Lo + 1, Hi>(r) * r + c;
}

// x clamped to [-746, 710] (beyond, e^x is 0 or inf; NaN passes through), and n = x / ln2
// rounded to an integer.
FASTPID_ALWAYS_INLINE inline double exp_clamp(double x, double& n) {
  double xc = x < -746.0 ? -746.0 : x;
  xc = xc > 710.0 ? 710.0 : xc;
  n = (xc * kLog2e + kRound) - kRound;
  return xc;
}

// r = x - n ln2, exact (Cody and Waite's two-part ln2).
FASTPID_ALWAYS_INLINE inline double exp_remainder(double x, double n) { return (x - n * kLn2Hi) - n * kLn2Lo; }

// 2^n = 2^h 2^(n - h) for an integer-valued n within [-1076, 1025], h = n / 2 rounded: both
// factors normal numbers, so that products with them come out right down to the subnormals.
FASTPID_ALWAYS_INLINE inline void pow2_halves(double n, double& a, double& b) {
  const double h = (0.5 * n + kRound) - kRound;
  a = bits_to_double(double_to_bits(h + (kRound + 1023.0)) << 52);
  b = bits_to_double(double_to_bits((n - h) + (kRound + 1023.0)) << 52);
}
#endif

FASTPID_HD FASTPID_ALWAYS_INLINE inline double vexp(double x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  double n;
  const double xc = exp_clamp(x, n);
  const double r = exp_remainder(xc, n);
#if defined(__FMA__)
  const double p = exp_series<0, 13>(r);
#else
  // Without fused multiply-adds Horner's last two steps round twice near 1 (up to 1.03 ulp):
  // 1 + r + r^2 (1/2 + ...) is summed in two parts instead (Fast2Sum; |r| > r^2 (1/2 + ...)
  // and 1 > |r + ...|), which leaves one rounding of the result.
  const double t = r * r * exp_series<2, 13>(r);
  const double hi = r + t, lo = (r - hi) + t;
  const double one = 1.0 + hi, lo1 = (1.0 - one) + hi;
  const double p = one + (lo1 + lo);
#endif
  double a, b;
  pow2_halves(n, a, b);
  return p * a * b;
#endif
}

// e^x - 1 without the cancellation of e^x - 1 near 0: for |x| < 1 the series x (1 + x/2 + ...
// + x^18/19!) itself (remainder below 5e-19 relative); beyond, x = n ln2 + r as in vexp and
// 2^n (e^r - 1) + (2^n - 1), whose two terms then cancel little. Where 2^n would overflow
// (n > 1000), 2^h (e^r) 2^(n - h) - 1 as in vexp.
FASTPID_HD FASTPID_ALWAYS_INLINE inline double vexpm1(double x) {
#if defined(__CUDA_ARCH__)
  return expm1(x);
#else
  double rounded;
  const double xc = exp_clamp(x, rounded);
  const double n = (xc < 1.0 && xc > -1.0) ? 0.0 : rounded;
  const double r = exp_remainder(xc, n);
  const double em1 = r * exp_series<1, 19>(r);  // e^r - 1
  double th, tl;
  pow2_halves(n, th, tl);
  const double t = th * tl;  // 2^n
  const double far = th * (em1 + 1.0) * tl - 1.0;
  return n == 0.0 ? em1 : (n > 1000.0 ? far : t * em1 + (t - 1.0));
#endif
}

FASTPID_HD FASTPID_ALWAYS_INLINE inline double vlog(double x) {
#if defined(__CUDA_ARCH__)
  return log(x);
#else
  // Subnormals: scaled by 2^54 into the normal range, and 54 taken off the exponent.
  const bool sub = x < 0x1p-1022;
  const uint64_t b = double_to_bits(sub ? x * 0x1p54 : x);
  const uint64_t mant = b & 0x000fffffffffffffULL;
  // m in [1, sqrt 2): exponent 0; m in [sqrt 2, 2): halved, exponent one more.
  const bool high = mant > 0x6a09e667f3bccULL;
  const double m = bits_to_double(mant | (high ? 0x3fe0000000000000ULL : 0x3ff0000000000000ULL));
  // The biased exponent (0..2047) as a double, exactly: 2^52 + it, less 2^52.
  const double biased = bits_to_double((b >> 52) | 0x4330000000000000ULL) - 0x1p52;
  const double e = biased - 1023.0 + (high ? 1.0 : 0.0) - (sub ? 54.0 : 0.0);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double t = 1.0 / 21.0;
  t = t * z + 1.0 / 19.0;
  t = t * z + 1.0 / 17.0;
  t = t * z + 1.0 / 15.0;
  t = t * z + 1.0 / 13.0;
  t = t * z + 1.0 / 11.0;
  t = t * z + 1.0 / 9.0;
  t = t * z + 1.0 / 7.0;
  t = t * z + 1.0 / 5.0;
  t = t * z + 1.0 / 3.0;
  t = 2.0 * z * t;
  double r = e * kLn2Hi + (f - (s * (f - t) - e * kLn2Lo));
  // log 0 = -inf, log inf = inf, NaN below 0 and for NaN.
  r = x == 0.0 ? -HUGE_VAL : r;
  r = x == HUGE_VAL ? x : r;
  return x < 0.0 || x != x ? NAN : r;
#endif
}

}  // namespace detail
}  // namespace fastpid
