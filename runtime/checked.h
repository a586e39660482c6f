// Checked int64 arithmetic for sizes, byte counts and FLOP counts. An overflow throws SizeOverflow (a clear
// error; the CLI exits 2) where plain int64_t would wrap: undefined behaviour and a silently wrong number.
//
//   const CheckedInt b = config.batch_size, t = config.context_length;
//   const int64_t probs = (b * h * t * t).value();   // throws if the product does not fit int64
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace reckon {

// An int64 count that did not fit. Derives from std::overflow_error; what() names the operation.
struct SizeOverflow : std::overflow_error {
  using std::overflow_error::overflow_error;
};

[[noreturn]] void throw_size_overflow(int64_t a, char op, int64_t b);

class CheckedInt {
 public:
  constexpr CheckedInt(int64_t v = 0) : v_(v) {}  // implicit: literals and int64_t fields mix in freely
  constexpr int64_t value() const { return v_; }

  friend CheckedInt operator+(CheckedInt a, CheckedInt b) {
    int64_t r;
    if (__builtin_add_overflow(a.v_, b.v_, &r)) throw_size_overflow(a.v_, '+', b.v_);
    return r;
  }
  friend CheckedInt operator-(CheckedInt a, CheckedInt b) {
    int64_t r;
    if (__builtin_sub_overflow(a.v_, b.v_, &r)) throw_size_overflow(a.v_, '-', b.v_);
    return r;
  }
  friend CheckedInt operator*(CheckedInt a, CheckedInt b) {
    int64_t r;
    if (__builtin_mul_overflow(a.v_, b.v_, &r)) throw_size_overflow(a.v_, '*', b.v_);
    return r;
  }
  friend CheckedInt operator/(CheckedInt a, CheckedInt b) {
    if (b.v_ == 0 || (a.v_ == std::numeric_limits<int64_t>::min() && b.v_ == -1)) throw_size_overflow(a.v_, '/', b.v_);
    return a.v_ / b.v_;
  }
  CheckedInt& operator+=(CheckedInt b) { return *this = *this + b; }
  CheckedInt& operator-=(CheckedInt b) { return *this = *this - b; }
  CheckedInt& operator*=(CheckedInt b) { return *this = *this * b; }
  friend bool operator==(CheckedInt a, CheckedInt b) { return a.v_ == b.v_; }
  friend auto operator<=>(CheckedInt a, CheckedInt b) { return a.v_ <=> b.v_; }

 private:
  int64_t v_;
};

}  // namespace reckon
