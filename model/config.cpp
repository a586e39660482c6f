#include "model/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "runtime/check.h"

namespace reckon {

namespace {

struct Preset {
  const char* name;
  int64_t v, t, l, d, h, f, b;
  FfnKind ffn;
  bool tied;
  Position pos;
};

// S and M are the shapes of shared/peers/lm_bench.py. The GPT-2 shapes follow the accounting problem of
// shared/seeds: FFN = W1, SiLU, W2 with d_ff = 4·d_model, untied output embedding, no learned positions
// (override tie_embeddings / position for the original GPT-2 layout).
constexpr Preset kPresets[] = {
    {"tiny", 256, 32, 2, 64, 4, 256, 4, FfnKind::swiglu, false, Position::none},
    {"S", 8192, 256, 4, 512, 8, 2048, 8, FfnKind::swiglu, false, Position::none},
    {"M", 16384, 512, 8, 768, 12, 3072, 4, FfnKind::swiglu, false, Position::none},
    {"gpt2-small", 50257, 1024, 12, 768, 12, 3072, 1, FfnKind::silu_mlp, false, Position::none},
    {"gpt2-medium", 50257, 1024, 24, 1024, 16, 4096, 1, FfnKind::silu_mlp, false, Position::none},
    {"gpt2-large", 50257, 1024, 36, 1280, 20, 5120, 1, FfnKind::silu_mlp, false, Position::none},
    {"gpt2-xl", 50257, 1024, 48, 1600, 25, 6400, 1, FfnKind::silu_mlp, false, Position::none},
    // GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1: n_layers, d_model, n_heads,
    // d_head 128, n_ctx 2048; d_ff = 4·d_model; GPT-2's BPE vocabulary, learned positions, tied embeddings).
    // Stand-ins, in reckon's model: silu_mlp for the GELU MLP (same 2 matrices), RMSNorm for LayerNorm, no biases
    // — about 0.01% of the parameters. 13B: the paper's d_model 5140 is not divisible by its 40 heads (of 128);
    // reckon uses 40 × 128 = 5120.
    {"gpt3-6.7b", 50257, 2048, 32, 4096, 32, 16384, 1, FfnKind::silu_mlp, true, Position::learned},
    {"gpt3-13b", 50257, 2048, 40, 5120, 40, 20480, 1, FfnKind::silu_mlp, true, Position::learned},
    {"gpt3-175b", 50257, 2048, 96, 12288, 96, 49152, 1, FfnKind::silu_mlp, true, Position::learned},
    // LLaMA 2 (Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models"; shapes from the
    // released config.json: vocab 32000, max_position_embeddings 4096, hidden_size, intermediate_size,
    // num_hidden_layers, num_attention_heads). SwiGLU, RMSNorm, untied head. RoPE has no parameters; reckon
    // applies no position encoding (position none), so RoPE's elementwise work on q and k is not counted.
    // 70B uses grouped-query attention (8 key/value heads): out of scope here, modelled as full multi-head
    // attention — 78.37 B parameters instead of the published 68.98 B (k and v are D×D, not D×1024).
    {"llama2-7b", 32000, 4096, 32, 4096, 32, 11008, 1, FfnKind::swiglu, false, Position::none},
    {"llama2-13b", 32000, 4096, 40, 5120, 40, 13824, 1, FfnKind::swiglu, false, Position::none},
    {"llama2-70b", 32000, 4096, 80, 8192, 64, 28672, 1, FfnKind::swiglu, false, Position::none},
};

// Every settable key, where it may appear in a TOML file, and what it accepts: the one table that parse
// errors, unknown-key suggestions and validate() all read, so a message always states the allowed range.
enum class Kind { integer, real, boolean, choice };
enum class Section { model, optim, top };
struct FieldSpec {
  const char* key;
  Section section;
  Kind kind;
  const char* allowed;  // as printed: "an integer in [1, 65536]"
};
constexpr FieldSpec kFields[] = {
    {"vocab_size", Section::model, Kind::integer, "an integer in [2, 16777216]"},
    {"context_length", Section::model, Kind::integer, "an integer in [1, 131072]"},
    {"num_layers", Section::model, Kind::integer, "an integer in [1, 1024]"},
    {"d_model", Section::model, Kind::integer, "an integer in [1, 65536]"},
    {"num_heads", Section::model, Kind::integer, "an integer in [1, d_model] that divides d_model"},
    {"d_ff", Section::model, Kind::integer, "an integer in [1, 262144]"},
    {"ffn", Section::model, Kind::choice, "one of swiglu, silu_mlp"},
    {"tie_embeddings", Section::model, Kind::boolean, "one of true, false"},
    {"position", Section::model, Kind::choice, "one of none, learned"},
    {"batch_size", Section::model, Kind::integer, "an integer in [1, 65536]"},
    {"rmsnorm_eps", Section::model, Kind::real, "a number in (0, 1]"},
    {"precision", Section::model, Kind::choice, "one of fp32, amp-bf16, bf16"},
    {"grad_dtype", Section::model, Kind::choice, "one of auto, fp32, bf16 (bf16 only with precision = bf16)"},
    {"attention", Section::model, Kind::choice, "one of naive, flash"},
    {"recompute", Section::model, Kind::choice, "one of none, attention, full"},
    {"zero_stage", Section::model, Kind::integer, "an integer in [0, 3] (0 = DDP, 1, 2, 3 = ZeRO stages)"},
    {"bucket_cap_mb", Section::model, Kind::real, "a number in [0.001, 4096] (MiB per gradient all-reduce)"},
    {"lr", Section::optim, Kind::real, "a number in [0, 10]"},
    {"beta1", Section::optim, Kind::real, "a number in [0, 1)"},
    {"beta2", Section::optim, Kind::real, "a number in [0, 1)"},
    {"adam_eps", Section::optim, Kind::real, "a number in (0, 1]"},
    {"weight_decay", Section::optim, Kind::real, "a number in [0, 1)"},
    {"seed", Section::top, Kind::integer, "an integer in [0, 9223372036854775807]"},
};

const FieldSpec* find_field(std::string_view key) {
  for (const FieldSpec& f : kFields) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

// Levenshtein distance, for "did you mean …?" (keys are short).
int64_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "; did you mean 'd_model'?" when a known name is close (at most a third of the letters differ), else "".
std::string suggestion(std::string_view key, const std::vector<std::string>& names) {
  std::string best;
  int64_t best_distance = std::numeric_limits<int64_t>::max();
  for (const std::string& name : names) {
    const int64_t d = edit_distance(key, name);
    if (d < best_distance) best_distance = d, best = name;
  }
  const int64_t limit = std::max<int64_t>(2, static_cast<int64_t>(key.size()) / 3);
  return best_distance <= limit ? fmt::format("; did you mean '{}'?", best) : std::string();
}

std::vector<std::string> field_names() {
  std::vector<std::string> names;
  for (const FieldSpec& f : kFields) names.emplace_back(f.key);
  return names;
}

[[noreturn]] void throw_not(std::string_view key, std::string_view value, const char* what) {
  const FieldSpec* f = find_field(key);
  throw std::invalid_argument(fmt::format("{}: '{}' is not {}; allowed: {}", key, value, what, f->allowed));
}

int64_t parse_int(std::string_view key, std::string_view value) {
  int64_t out = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec == std::errc::result_out_of_range) throw_not(key, value, "an integer that fits int64");
  if (ec != std::errc() || ptr != value.data() + value.size()) throw_not(key, value, "an integer");
  return out;
}

double parse_double(std::string_view key, std::string_view value) {
  double out = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || ptr != value.data() + value.size()) throw_not(key, value, "a number");
  return out;
}

bool parse_bool(std::string_view key, std::string_view value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw_not(key, value, "a boolean");
}

// The one setter from text: name -> field. Range checks are validate()'s (a config is checked whole).
void set_field(TrainConfig& c, std::string_view key, std::string_view value) {
  ModelConfig& m = c.model;
  AdamWConfig& o = c.optim;
  if (find_field(key) == nullptr) {
    throw std::invalid_argument(fmt::format("unknown config key '{}'{}; allowed keys: {}", key,
                                            suggestion(key, field_names()), fmt::join(field_names(), ", ")));
  }
  if (key == "vocab_size") m.vocab_size = parse_int(key, value);
  else if (key == "context_length") m.context_length = parse_int(key, value);
  else if (key == "num_layers") m.num_layers = parse_int(key, value);
  else if (key == "d_model") m.d_model = parse_int(key, value);
  else if (key == "num_heads") m.num_heads = parse_int(key, value);
  else if (key == "d_ff") m.d_ff = parse_int(key, value);
  else if (key == "batch_size") m.batch_size = parse_int(key, value);
  else if (key == "zero_stage") m.zero_stage = parse_int(key, value);
  else if (key == "rmsnorm_eps") m.rmsnorm_eps = parse_double(key, value);
  else if (key == "bucket_cap_mb") m.bucket_cap_mb = parse_double(key, value);
  else if (key == "tie_embeddings") m.tie_embeddings = parse_bool(key, value);
  else if (key == "ffn") {
    if (value == "swiglu") m.ffn = FfnKind::swiglu;
    else if (value == "silu_mlp") m.ffn = FfnKind::silu_mlp;
    else throw std::invalid_argument(fmt::format("ffn: '{}' is not allowed, allowed values are swiglu, silu_mlp", value));
  } else if (key == "position") {
    if (value == "none") m.position = Position::none;
    else if (value == "learned") m.position = Position::learned;
    else throw std::invalid_argument(fmt::format("position: '{}' is not allowed, allowed values are none, learned", value));
  } else if (key == "precision") {
    if (value == "fp32") m.precision = Precision::fp32;
    else if (value == "amp-bf16") m.precision = Precision::amp_bf16;
    else if (value == "bf16") m.precision = Precision::bf16;
    else throw std::invalid_argument(fmt::format("precision: '{}' is not allowed, allowed values are fp32, amp-bf16, bf16", value));
  } else if (key == "attention") {
    if (value == "naive") m.attention = AttentionKind::naive;
    else if (value == "flash") m.attention = AttentionKind::flash;
    else throw std::invalid_argument(fmt::format("attention: '{}' is not allowed, allowed values are naive, flash", value));
  } else if (key == "recompute") {
    if (value == "none") m.recompute = Recompute::none;
    else if (value == "attention") m.recompute = Recompute::attention;
    else if (value == "full") m.recompute = Recompute::full;
    else throw std::invalid_argument(fmt::format("recompute: '{}' is not allowed, allowed values are none, attention, full", value));
  } else if (key == "grad_dtype") {
    if (value == "auto") m.grad_dtype = GradDType::automatic;
    else if (value == "fp32") m.grad_dtype = GradDType::fp32;
    else if (value == "bf16") m.grad_dtype = GradDType::bf16;
    else throw std::invalid_argument(fmt::format("grad_dtype: '{}' is not allowed, allowed values are auto, fp32, bf16", value));
  } else if (key == "lr") o.lr = parse_double(key, value);
  else if (key == "beta1") o.beta1 = parse_double(key, value);
  else if (key == "beta2") o.beta2 = parse_double(key, value);
  else if (key == "adam_eps") o.eps = parse_double(key, value);
  else if (key == "weight_decay") o.weight_decay = parse_double(key, value);
  else if (key == "seed") {
    const int64_t s = parse_int(key, value);
    check_arg(s >= 0, "seed: {} is outside the allowed range [0, {}]", s, std::numeric_limits<int64_t>::max());
    c.seed = static_cast<uint64_t>(s);
  }
}

// ---- TOML files: bounded before the parser sees them.
constexpr int64_t kMaxConfigBytes = 1 << 20;  // a config is a few hundred bytes; 1 MiB is generous
constexpr int kMaxNesting = 8;                // key parts, table-header parts, bracket depth

// Reads a config file whole, refusing what is not a small regular file.
std::string read_config_text(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw std::invalid_argument(fmt::format("--config: cannot read config file {}: {}", path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw std::invalid_argument(fmt::format("--config: config file {} is not a regular file{}", path,
                                            S_ISDIR(st.st_mode) ? " (it is a folder)" : ""));
  }
  if (st.st_size > kMaxConfigBytes) {
    throw std::invalid_argument(fmt::format("--config: config file {} is {} bytes, above the limit of {} bytes", path,
                                            static_cast<int64_t>(st.st_size), kMaxConfigBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text;
  text.resize(static_cast<size_t>(kMaxConfigBytes) + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) throw std::invalid_argument(fmt::format("--config: cannot read config file {}", path));
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    throw std::invalid_argument(fmt::format("--config: config file {} is above the limit of {} bytes", path, kMaxConfigBytes));
  }
  return text;
}

// A pre-scan the TOML parser never sees past: dotted keys, table headers and nested arrays / inline tables
// deeper than kMaxNesting are refused here (toml++ recurses on them and a 100,000-part header exhausts the
// stack). Strings and comments are skipped; the count is conservative (a dot in a bare value counts too).
void prescan_nesting(const std::string& path, const std::string& text) {
  int64_t line = 1;
  int depth = 0, parts = 1;  // bracket depth; dot-separated parts of the key or header on this line
  bool before_value = true;  // on this line, before '=' (in a key or a header)
  enum { code, comment, basic, literal, basic3, literal3 } state = code;
  auto fail = [&](const char* what) {
    throw std::invalid_argument(fmt::format("config file {}: line {}: {} nest deeper than {} levels", path, line, what,
                                            kMaxNesting));
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    const bool three = i + 2 < text.size() && text[i + 1] == ch && text[i + 2] == ch;
    switch (state) {
      case comment:
        if (ch == '\n') state = code;
        break;
      case basic:
        if (ch == '\\') ++i;
        else if (ch == '"' || ch == '\n') state = code;
        break;
      case literal:
        if (ch == '\'' || ch == '\n') state = code;
        break;
      case basic3:
        if (ch == '\\') ++i;
        else if (ch == '"' && three) state = code, i += 2;
        break;
      case literal3:
        if (ch == '\'' && three) state = code, i += 2;
        break;
      case code:
        if (ch == '#') state = comment;
        else if (ch == '"') state = three ? (i += 2, basic3) : basic;
        else if (ch == '\'') state = three ? (i += 2, literal3) : literal;
        else if (ch == '[' || ch == '{') {
          if (++depth > kMaxNesting) fail("arrays, inline tables or table headers");
        } else if (ch == ']' || ch == '}') depth = std::max(depth - 1, 0);
        else if (ch == '=') before_value = false;
        else if (ch == '.' && (before_value || depth > 0) && ++parts > kMaxNesting) fail("dotted keys");
        else if (ch == ',') parts = 1;
        break;
    }
    if (ch == '\n') {
      ++line;
      if (state != basic3 && state != literal3) {
        parts = 1;
        before_value = true;
      }
    }
  }
}

// One TOML value as the text set_field parses, after checking its TOML type against the field's kind.
std::string value_text(const std::string& where, const FieldSpec& f, const toml::node& node) {
  auto wrong = [&](const char* got) {
    return std::invalid_argument(fmt::format("{}{}: expected {}, got {}", where, f.key, f.allowed, got));
  };
  const char* type = node.is_table() ? "a table" : node.is_array() ? "an array" : node.is_string() ? "a string"
                     : node.is_integer() ? "an integer" : node.is_floating_point() ? "a floating-point number"
                     : node.is_boolean() ? "a boolean" : "a date or time";
  switch (f.kind) {
    case Kind::integer:
      if (!node.is_integer()) throw wrong(type);
      return std::to_string(*node.value<int64_t>());
    case Kind::real:
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      if (!node.is_floating_point()) throw wrong(type);
      return fmt::format("{}", *node.value<double>());
    case Kind::boolean:
      if (!node.is_boolean()) throw wrong(type);
      return *node.value<bool>() ? "true" : "false";
    case Kind::choice:
      if (!node.is_string()) throw wrong(type);
      return *node.value<std::string>();
  }
  throw wrong(type);
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

TrainConfig preset_config(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) {
      TrainConfig c;
      c.preset = p.name;
      c.model = ModelConfig{.vocab_size = p.v, .context_length = p.t, .num_layers = p.l, .d_model = p.d, .num_heads = p.h,
                            .d_ff = p.f, .ffn = p.ffn, .tie_embeddings = p.tied, .position = p.pos, .batch_size = p.b};
      return c;
    }
  }
  throw std::invalid_argument(fmt::format("preset: '{}' is not a preset; allowed values are {}", name,
                                          fmt::join(preset_names(), ", ")));
}

void apply_override(TrainConfig& config, std::string_view kv) {
  const auto eq = kv.find('=');
  check_arg(eq != std::string_view::npos && eq > 0, "--set: '{}' is not of the form key=value", kv);
  set_field(config, kv.substr(0, eq), kv.substr(eq + 1));
}

TrainConfig load_config_file(const std::string& path) { return parse_config_text(read_config_text(path), path); }

TrainConfig parse_config_text(const std::string& text, const std::string& path) {
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    throw std::invalid_argument(fmt::format("config file {}: {} bytes, above the limit of {} bytes", path, text.size(),
                                            kMaxConfigBytes));
  }
  prescan_nesting(path, text);
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(fmt::format("config file {}: {} (line {})", path, e.description(),
                                            e.source().begin.line));
  }
  // Layout: optional `preset = "…"`, then keys at top level or in [model] / [optim]; nothing else.
  TrainConfig config;
  if (const toml::node* preset = root.get("preset")) {
    if (!preset->is_string()) {
      throw std::invalid_argument(fmt::format("config file {}: preset: expected a string, one of {}", path,
                                              fmt::join(preset_names(), ", ")));
    }
    try {
      config = preset_config(*preset->value<std::string>());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("config file {}: {}", path, e.what()));
    }
  }
  auto apply_table = [&](const toml::table& table, const std::string& where, std::optional<Section> section) {
    std::vector<std::string> allowed;
    for (const FieldSpec& f : kFields) {
      if (!section || f.section == *section) allowed.emplace_back(f.key);
    }
    if (!section) allowed.insert(allowed.begin(), {"preset", "model", "optim"});
    for (const auto& [key, node] : table) {
      const std::string k(key.str());
      if (!section && (k == "preset" || k == "model" || k == "optim")) continue;  // handled around this loop
      const FieldSpec* f = find_field(k);
      if (f == nullptr || (section && f->section != *section)) {
        const std::string kind = node.is_table() ? "table" : "key";
        throw std::invalid_argument(fmt::format("config file {}: unknown {} '{}{}'{}; allowed here: {}", path, kind,
                                                where, k, suggestion(k, allowed), fmt::join(allowed, ", ")));
      }
      try {
        set_field(config, k, value_text(where, *f, node));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("config file {}: {}", path, e.what()));
      }
    }
  };
  apply_table(root, "", std::nullopt);
  for (const auto& [name, section] : {std::pair{"model", Section::model}, std::pair{"optim", Section::optim}}) {
    const toml::node* node = root.get(name);
    if (node == nullptr) continue;
    if (!node->is_table()) {
      throw std::invalid_argument(fmt::format("config file {}: '{}' must be a table ([{}]), got a value", path, name, name));
    }
    apply_table(*node->as_table(), std::string(name) + ".", section);
  }
  return config;
}

void validate(const TrainConfig& c) {
  const ModelConfig& m = c.model;
  check_range("vocab_size", m.vocab_size, 2, 1 << 24);
  check_range("context_length", m.context_length, 1, 1 << 17);
  check_range("num_layers", m.num_layers, 1, 1024);
  check_range("d_model", m.d_model, 1, 1 << 16);
  check_range("num_heads", m.num_heads, 1, m.d_model);
  check_arg(m.d_model % m.num_heads == 0,
            "num_heads: {} does not divide d_model {} (d_model % num_heads must be 0)", m.num_heads, m.d_model);
  check_range("d_ff", m.d_ff, 1, 1 << 18);
  check_range("batch_size", m.batch_size, 1, 1 << 16);
  check_arg(m.zero_stage >= 0 && m.zero_stage <= 3, "zero_stage: {} is outside the allowed range [0, 3] (0 = DDP, "
            "1 = + AdamW state sharded, 2 = + gradients, 3 = + parameters)", m.zero_stage);
  check_range("bucket_cap_mb", m.bucket_cap_mb, 0.001, 4096.0);
  check_range("rmsnorm_eps", m.rmsnorm_eps, 0.0, 1.0, true, false);
  check_arg(m.grad_dtype != GradDType::bf16 || m.precision == Precision::bf16,
            "grad_dtype: bf16 needs precision = bf16 (precision {} keeps float32 gradients); allowed: auto, fp32",
            precision_name(m.precision));
  const AdamWConfig& o = c.optim;
  check_range("lr", o.lr, 0.0, 10.0, false, false);
  check_range("beta1", o.beta1, 0.0, 1.0, false, true);
  check_range("beta2", o.beta2, 0.0, 1.0, false, true);
  check_range("adam_eps", o.eps, 0.0, 1.0, true, false);
  check_range("weight_decay", o.weight_decay, 0.0, 1.0, false, true);
}

std::vector<std::string> config_overrides(const TrainConfig& c) {
  const ModelConfig& m = c.model;
  const AdamWConfig& o = c.optim;
  return {fmt::format("vocab_size={}", m.vocab_size),
          fmt::format("context_length={}", m.context_length),
          fmt::format("num_layers={}", m.num_layers),
          fmt::format("d_model={}", m.d_model),
          fmt::format("num_heads={}", m.num_heads),
          fmt::format("d_ff={}", m.d_ff),
          fmt::format("ffn={}", ffn_kind_name(m.ffn)),
          fmt::format("tie_embeddings={}", m.tie_embeddings),
          fmt::format("position={}", position_name(m.position)),
          fmt::format("batch_size={}", m.batch_size),
          fmt::format("rmsnorm_eps={}", m.rmsnorm_eps),
          fmt::format("precision={}", precision_name(m.precision)),
          fmt::format("grad_dtype={}", grad_dtype_name(m.grad_dtype)),
          fmt::format("attention={}", attention_name(m.attention)),
          fmt::format("recompute={}", recompute_name(m.recompute)),
          fmt::format("zero_stage={}", m.zero_stage),
          fmt::format("bucket_cap_mb={}", m.bucket_cap_mb),
          fmt::format("lr={}", o.lr),
          fmt::format("beta1={}", o.beta1),
          fmt::format("beta2={}", o.beta2),
          fmt::format("adam_eps={}", o.eps),
          fmt::format("weight_decay={}", o.weight_decay),
          fmt::format("seed={}", c.seed)};
}

const char* position_name(Position p) { return p == Position::none ? "none" : "learned"; }
const char* attention_name(AttentionKind a) { return a == AttentionKind::naive ? "naive" : "flash"; }
const char* recompute_name(Recompute r) {
  return r == Recompute::none ? "none" : r == Recompute::attention ? "attention" : "full";
}

std::string describe(const ModelConfig& m) {
  std::string precision = precision_name(m.precision);
  if (m.precision == Precision::bf16) {
    precision += m.dtypes().grad == DType::f32 ? " (fp32 grads)" : " (bf16 grads)";
  }
  return fmt::format("V {}, T {}, L {}, D {}, H {}, d_ff {}, ffn {}, {}, position {}, B {}, {}, attention {}{}{}",
                     m.vocab_size, m.context_length, m.num_layers, m.d_model, m.num_heads, m.d_ff,
                     ffn_kind_name(m.ffn), m.tie_embeddings ? "tied" : "untied", position_name(m.position),
                     m.batch_size, precision, attention_name(m.attention),
                     m.recompute == Recompute::none ? "" : fmt::format(", recompute {}", recompute_name(m.recompute)),
                     m.zero_stage == 0 ? "" : fmt::format(", zero stage {}", m.zero_stage));
}

}  // namespace reckon
