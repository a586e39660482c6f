#include "model/config.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

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

int64_t parse_int(std::string_view key, std::string_view value) {
  int64_t out = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  check_arg(ec == std::errc() && ptr == value.data() + value.size(), "{}: '{}' is not an integer", key, value);
  return out;
}

double parse_double(std::string_view key, std::string_view value) {
  try {
    size_t used = 0;
    const double d = std::stod(std::string(value), &used);
    check_arg(used == value.size(), "{}: '{}' is not a number", key, value);
    return d;
  } catch (const std::logic_error&) {
    throw std::invalid_argument(fmt::format("{}: '{}' is not a number", key, value));
  }
}

bool parse_bool(std::string_view key, std::string_view value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw std::invalid_argument(fmt::format("{}: '{}' is not a boolean, allowed values are true, false", key, value));
}

// The one table of settable keys: name -> setter from text.
void set_field(TrainConfig& c, std::string_view key, std::string_view value) {
  ModelConfig& m = c.model;
  AdamWConfig& o = c.optim;
  if (key == "vocab_size") m.vocab_size = parse_int(key, value);
  else if (key == "context_length") m.context_length = parse_int(key, value);
  else if (key == "num_layers") m.num_layers = parse_int(key, value);
  else if (key == "d_model") m.d_model = parse_int(key, value);
  else if (key == "num_heads") m.num_heads = parse_int(key, value);
  else if (key == "d_ff") m.d_ff = parse_int(key, value);
  else if (key == "batch_size") m.batch_size = parse_int(key, value);
  else if (key == "rmsnorm_eps") m.rmsnorm_eps = parse_double(key, value);
  else if (key == "tie_embeddings") m.tie_embeddings = parse_bool(key, value);
  else if (key == "ffn") {
    if (value == "swiglu") m.ffn = FfnKind::swiglu;
    else if (value == "silu_mlp") m.ffn = FfnKind::silu_mlp;
    else throw std::invalid_argument(fmt::format("ffn: '{}' is not allowed, allowed values are swiglu, silu_mlp", value));
  } else if (key == "position") {
    if (value == "none") m.position = Position::none;
    else if (value == "learned") m.position = Position::learned;
    else throw std::invalid_argument(fmt::format("position: '{}' is not allowed, allowed values are none, learned", value));
  } else if (key == "lr") o.lr = parse_double(key, value);
  else if (key == "beta1") o.beta1 = parse_double(key, value);
  else if (key == "beta2") o.beta2 = parse_double(key, value);
  else if (key == "adam_eps") o.eps = parse_double(key, value);
  else if (key == "weight_decay") o.weight_decay = parse_double(key, value);
  else if (key == "seed") {
    const int64_t s = parse_int(key, value);
    check_arg(s >= 0, "seed: {} is outside the allowed range [0, {}]", s, std::numeric_limits<int64_t>::max());
    c.seed = static_cast<uint64_t>(s);
  } else {
    throw std::invalid_argument(fmt::format(
        "unknown config key '{}'; allowed keys: vocab_size, context_length, num_layers, d_model, num_heads, d_ff, "
        "ffn, tie_embeddings, position, batch_size, rmsnorm_eps, lr, beta1, beta2, adam_eps, weight_decay, seed",
        key));
  }
}

void check_range(std::string_view field, int64_t v, int64_t lo, int64_t hi) {
  check_arg(v >= lo && v <= hi, "{}: {} is outside the allowed range [{}, {}]", field, v, lo, hi);
}

void check_range(std::string_view field, double v, double lo, double hi, bool lo_open, bool hi_open) {
  const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  check_arg(ok, "{}: {} is outside the allowed range {}{}, {}{}", field, v, lo_open ? "(" : "[", lo, hi,
            hi_open ? ")" : "]");
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
      c.model = ModelConfig{p.v, p.t, p.l, p.d, p.h, p.f, p.ffn, p.tied, p.pos, p.b, 1e-5};
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

TrainConfig load_config_file(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(fmt::format("config file {}: {} (line {})", path, e.description(),
                                            e.source().begin.line));
  }
  TrainConfig config;
  if (auto preset = root["preset"].value<std::string>()) config = preset_config(*preset);
  auto apply_table = [&](const toml::table& table, const std::string& where) {
    for (const auto& [key, node] : table) {
      const std::string k(key.str());
      if (k == "preset" || node.is_table()) continue;
      std::string text;
      if (auto s = node.value<std::string>(); s && node.is_string()) text = *s;
      else if (node.is_integer()) text = std::to_string(*node.value<int64_t>());
      else if (node.is_floating_point()) text = fmt::format("{}", *node.value<double>());
      else if (node.is_boolean()) text = *node.value<bool>() ? "true" : "false";
      else throw std::invalid_argument(fmt::format("config file {}: {}{} has an unsupported type", path, where, k));
      try {
        set_field(config, k, text);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("config file {}: {}", path, e.what()));
      }
    }
  };
  apply_table(root, "");
  for (const char* section : {"model", "optim"}) {
    if (const toml::table* t = root[section].as_table()) apply_table(*t, std::string(section) + ".");
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
  check_range("rmsnorm_eps", m.rmsnorm_eps, 0.0, 1.0, true, false);
  const AdamWConfig& o = c.optim;
  check_range("lr", o.lr, 0.0, 10.0, false, false);
  check_range("beta1", o.beta1, 0.0, 1.0, false, true);
  check_range("beta2", o.beta2, 0.0, 1.0, false, true);
  check_range("adam_eps", o.eps, 0.0, 1.0, true, false);
  check_range("weight_decay", o.weight_decay, 0.0, 1.0, false, true);
}

const char* position_name(Position p) { return p == Position::none ? "none" : "learned"; }

std::string describe(const ModelConfig& m) {
  return fmt::format("V {}, T {}, L {}, D {}, H {}, d_ff {}, ffn {}, {}, position {}, B {}", m.vocab_size,
                     m.context_length, m.num_layers, m.d_model, m.num_heads, m.d_ff, ffn_kind_name(m.ffn),
                     m.tie_embeddings ? "tied" : "untied", position_name(m.position), m.batch_size);
}

}  // namespace reckon
