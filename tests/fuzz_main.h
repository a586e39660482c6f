// The driver the input fuzzers share (tests/fuzz_*.cpp): `name [inputs >= 1] [seed]`, one seeded generator per
// input (so a failure's seed and index reproduce it), and the verdicts: every input must be accepted or refused with
// a non-empty std::invalid_argument; any other exception fails, and so does a run that never reaches both outcomes
// (a fuzzer that does tests nothing).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>

namespace testing_ref {

// make(rng) -> the input; attempt(input) loads it (throws to refuse). accepted: the word for the first outcome.
template <typename Make, typename Attempt>
int run_fuzzer(const char* name, int argc, char** argv, long long default_count, unsigned long long default_seed,
               const char* accepted, Make make, Attempt attempt) {
  const long long count = argc > 1 ? std::atoll(argv[1]) : default_count;
  const unsigned long long seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : default_seed;
  if (count < 1) {
    std::fprintf(stderr, "usage: %s [inputs >= 1] [seed]\n", name);
    return 2;
  }
  long long ok = 0, refused = 0;
  for (long long i = 0; i < count; ++i) {
    std::mt19937_64 rng(seed * 1000003ULL + static_cast<unsigned long long>(i));
    const std::string input = make(rng);
    try {
      attempt(input);
      ++ok;
    } catch (const std::invalid_argument& e) {
      ++refused;
      if (std::string(e.what()).empty()) {
        std::fprintf(stderr, "%s: seed %llu input %lld: an error with no message\n", name, seed, i);
        return 1;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: seed %llu input %lld (%zu bytes): not an input error: %s\n", name, seed, i,
                   input.size(), e.what());
      return 1;
    }
  }
  std::printf("%s: %lld inputs from seed %llu: %lld %s, %lld refused with an input error, 0 crashes\n", name, count,
              seed, ok, accepted, refused);
  return ok > 0 && refused > 0 ? 0 : 1;
}

}  // namespace testing_ref
