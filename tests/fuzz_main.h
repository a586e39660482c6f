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
#include <vector>

namespace testing_ref {

// Text mutation for the text-format fuzzers: 1 to 8 edits, each one of 5 + extra kinds — flip a byte, insert a token,
// delete a range, a long repetition of one of the first `repeatable` tokens (deep nesting, long keys), the format's own
// edits (extra_edit(rng, s, k) for k in [0, extra)), or duplicate a slice.
template <typename ExtraEdit>
std::string mutate_text(std::mt19937_64& rng, std::string s, const std::vector<std::string>& tokens, size_t repeatable,
                        int extra, ExtraEdit extra_edit) {
  auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = rng() % 3 == 0 ? 1 : 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    const int kind = static_cast<int>(rng() % static_cast<unsigned long long>(5 + extra));
    if (kind == 0) {  // flip a byte
      if (!s.empty()) s[below(s.size())] = static_cast<char>(rng() & 0xff);
    } else if (kind == 1) {  // insert a token
      s.insert(below(s.size() + 1), tokens[below(tokens.size())]);
    } else if (kind == 2) {  // delete a range
      if (!s.empty()) {
        const size_t at = below(s.size());
        s.erase(at, below(s.size() - at + 1));
      }
    } else if (kind == 3) {  // a long repetition of one token
      const std::string& t = tokens[below(repeatable)];
      const size_t n = 1 + below(rng() % 4 == 0 ? 200000 : 64);
      std::string rep;
      rep.reserve(t.size() * n);
      for (size_t i = 0; i < n; ++i) rep += t;
      s.insert(below(s.size() + 1), rep);
    } else if (kind < 4 + extra) {
      extra_edit(rng, s, kind - 4);
    } else if (!s.empty()) {  // duplicate a slice
      const size_t at = below(s.size());
      s.insert(below(s.size() + 1), s.substr(at, below(64)));
    }
  }
  return s;
}

// The JSON tokens the JSON fuzzers share (structure, escapes, literals), then `own`: the first `repeatable` of them
// are the brackets and quotes mutate_text repeats to nest deeply.
inline std::vector<std::string> json_tokens(const std::vector<std::string>& own) {
  std::vector<std::string> t = {"{",  "}",       "[",       "]",    ":",    ",",     "\"",
                                "\\", "\\u0000", "\\ud800", "null", "true", "false", "-0"};
  t.insert(t.end(), own.begin(), own.end());
  return t;
}

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
