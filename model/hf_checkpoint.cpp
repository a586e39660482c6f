#include "model/hf_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "runtime/bf16.h"
#include "runtime/check.h"

namespace reckon {

namespace {

[[noreturn]] void no_layout(const std::string& field, const std::string& why) {
  throw std::invalid_argument(fmt::format(
      "--save-format hf: {}: {}; reckon writes Hugging Face layouts for GPT-2 (layernorm with norm_bias, qkvo and "
      "mlp biases, gelu_mlp or gelu_tanh_mlp, learned positions, multi-head attention) and LLaMA's family (rmsnorm, "
      "rope, a gated ffn: LLaMA, Mistral, Qwen2, OLMo-2, Gemma-2)",
      field, why));
}

// The parts' shapes give the tensor's: nn.Linear (Σ out, in) or a vector (Σ n); Conv1D (in, Σ out).
Shape spec_shape(const ParameterLayout& layout, const std::vector<int>& parts, bool conv1d) {
  const ParamSpec& first = layout.params[static_cast<size_t>(parts.front())];
  int64_t out = 0;
  for (int i : parts) out += layout.params[static_cast<size_t>(i)].dims[0];
  if (first.rank == 1) return {out};
  return conv1d ? Shape{first.dims[1], out} : Shape{out, first.dims[1]};
}

class Builder {
 public:
  Builder(const ParameterLayout& layout, HfStateDict& out) : layout_(layout), out_(out) {}
  // A tensor of the given parts (absent parts, index −1, are skipped; nothing when all are absent).
  void add(const std::string& key, std::vector<int> parts, bool conv1d = false) {
    parts.erase(std::remove(parts.begin(), parts.end(), -1), parts.end());
    if (parts.empty()) return;
    const bool matrix = layout_.params[static_cast<size_t>(parts.front())].rank == 2;
    out_.tensors.push_back({out_.prefix + key, parts, conv1d && matrix, spec_shape(layout_, parts, conv1d && matrix)});
  }
  void add_top(const std::string& key, int param) {  // outside the base model: lm_head
    if (param >= 0) out_.tensors.push_back({key, {param}, false, spec_shape(layout_, {param}, false)});
  }

 private:
  const ParameterLayout& layout_;
  HfStateDict& out_;
};

void check_gpt2(const ModelShape& m) {
  if (m.norm != NormKind::layernorm || !m.norm_bias) no_layout("norm", "GPT-2's are LayerNorms with β");
  if (m.attention_bias != AttentionBias::qkvo) no_layout("attention_bias", "GPT-2's c_attn and c_proj carry biases");
  if (!m.mlp_bias) no_layout("mlp_bias", "GPT-2's c_fc and c_proj carry biases");
  if (m.ffn != FfnKind::gelu_mlp && m.ffn != FfnKind::gelu_tanh_mlp) no_layout("ffn", "GPT-2's MLP is 2-matrix GELU");
  if (m.kv_heads() != m.num_heads || m.head_size() * m.num_heads != m.d_model) {
    no_layout("num_kv_heads", "GPT-2's attention is multi-head, heads d_model / num_heads wide");
  }
  if (m.sliding_window > 0 || m.attn_logit_softcapping > 0 || m.final_logit_softcapping > 0 || m.qk_norm ||
      m.scale_embeddings || m.norm_unit_offset) {
    no_layout("sliding_window", "GPT-2 has no window, caps, q/k norms or Gemma's scales");
  }
}

void gpt2_layout(const ModelShape& m, const ParameterLayout& p, HfStateDict& out) {
  check_gpt2(m);
  out.architecture = "GPT2LMHeadModel";
  out.prefix = "transformer.";
  Builder b(p, out);
  b.add("wte.weight", {p.tok_emb});
  b.add("wpe.weight", {p.pos_emb});
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const LayerParamIndex& l = p.layers[i];
    const std::string h = fmt::format("h.{}.", i);
    b.add(h + "ln_1.weight", {l.attn_norm});
    b.add(h + "ln_1.bias", {l.attn_norm_bias});
    b.add(h + "attn.c_attn.weight", {l.wq, l.wk, l.wv}, true);
    b.add(h + "attn.c_attn.bias", {l.bq, l.bk, l.bv}, true);
    b.add(h + "attn.c_proj.weight", {l.wo}, true);
    b.add(h + "attn.c_proj.bias", {l.bo}, true);
    b.add(h + "ln_2.weight", {l.ffn_norm});
    b.add(h + "ln_2.bias", {l.ffn_norm_bias});
    b.add(h + "mlp.c_fc.weight", {l.w1}, true);
    b.add(h + "mlp.c_fc.bias", {l.b1}, true);
    b.add(h + "mlp.c_proj.weight", {l.w2}, true);
    b.add(h + "mlp.c_proj.bias", {l.b2}, true);
  }
  b.add("ln_f.weight", {p.final_norm});
  b.add("ln_f.bias", {p.final_norm_bias});
  if (!m.tie_embeddings) b.add_top("lm_head.weight", p.lm_head);
}

// The transformers class of a LLaMA-family config, or a refusal naming the field.
std::string llama_family_class(const ModelShape& m) {
  if (m.norm != NormKind::rmsnorm) no_layout("norm", "LLaMA's family uses RMSNorm");
  if (m.position != Position::rope) no_layout("position", "LLaMA's family rotates q and k (rope)");
  if (!ffn_gated(m.ffn)) no_layout("ffn", "LLaMA's family has a gated MLP (gate_proj, up_proj, down_proj)");
  const bool capped = m.attn_logit_softcapping > 0 || m.final_logit_softcapping > 0;
  if (m.norm_placement == NormPlacement::sandwich) {
    if (!m.norm_unit_offset || !m.scale_embeddings || m.attention_bias != AttentionBias::none || m.qk_norm) {
      no_layout("norm_placement",
                "sandwich norms are Gemma-2's, which also needs norm_unit_offset and "
                "scale_embeddings, and has no attention biases or q/k norms");
    }
    return "Gemma2ForCausalLM";
  }
  if (m.norm_unit_offset || m.scale_embeddings || capped) {
    no_layout("norm_unit_offset", "Gemma's scales and soft-caps come with its sandwich norms");
  }
  if (m.norm_placement == NormPlacement::post) {
    if (!m.qk_norm || m.attention_bias != AttentionBias::none || m.sliding_window > 0) {
      no_layout("norm_placement", "post norms are OLMo-2's, which also has q/k norms and no biases or windows");
    }
    return "Olmo2ForCausalLM";
  }
  if (m.qk_norm) no_layout("qk_norm", "q/k norms come with OLMo-2's post norms");
  if (m.attention_bias == AttentionBias::qkv) {
    if (m.sliding_window > 0 || m.mlp_bias) no_layout("attention_bias", "Qwen2 has no window or MLP biases");
    return "Qwen2ForCausalLM";
  }
  if (m.sliding_window > 0) {
    if (m.sliding_window_pattern != 0 || m.attention_bias != AttentionBias::none || m.mlp_bias) {
      no_layout("sliding_window", "Mistral windows every layer and has no biases");
    }
    return "MistralForCausalLM";
  }
  return "LlamaForCausalLM";
}

void llama_layout(const ModelShape& m, const ParameterLayout& p, HfStateDict& out) {
  if (m.parallel_block()) no_layout("block", "LLaMA's family is sequential");
  out.architecture = llama_family_class(m);
  out.prefix = "model.";
  const bool gemma = out.architecture == "Gemma2ForCausalLM", olmo = out.architecture == "Olmo2ForCausalLM";
  Builder b(p, out);
  b.add("embed_tokens.weight", {p.tok_emb});
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const LayerParamIndex& l = p.layers[i];
    const std::string h = fmt::format("layers.{}.", i);
    b.add(h + "input_layernorm.weight", {olmo ? -1 : l.attn_norm});
    for (const auto& [name, w, bias] : {std::tuple{"q", l.wq, l.bq}, std::tuple{"k", l.wk, l.bk},
                                        std::tuple{"v", l.wv, l.bv}, std::tuple{"o", l.wo, l.bo}}) {
      b.add(h + "self_attn." + name + "_proj.weight", {w});
      b.add(h + "self_attn." + name + "_proj.bias", {bias});
    }
    b.add(h + "self_attn.q_norm.weight", {l.q_norm});
    b.add(h + "self_attn.k_norm.weight", {l.k_norm});
    // LLaMA's post_attention_layernorm is the norm before its MLP; OLMo-2's and Gemma-2's the one after attention.
    b.add(h + "post_attention_layernorm.weight", {gemma || olmo ? l.attn_post_norm : l.ffn_norm});
    b.add(h + "pre_feedforward_layernorm.weight", {gemma ? l.ffn_norm : -1});
    b.add(h + "post_feedforward_layernorm.weight", {l.ffn_post_norm});
    for (const auto& [name, w, bias] :
         {std::tuple{"gate", l.w1, l.b1}, std::tuple{"up", l.w3, l.b3}, std::tuple{"down", l.w2, l.b2}}) {
      b.add(h + "mlp." + name + "_proj.weight", {w});
      b.add(h + "mlp." + name + "_proj.bias", {bias});
    }
  }
  b.add("norm.weight", {p.final_norm});
  if (!m.tie_embeddings) b.add_top("lm_head.weight", p.lm_head);
}

// Copies HF tensor `t` (raw bytes of `from`, in the file's layout) into or out of the parameters. to_file: parameters
// → tensor; else tensor → parameters. Elements convert between float32 and bfloat16 as needed.
struct ElementIo {
  DType dtype;
  void* base;
  float get(int64_t i) const {
    return dtype == DType::bf16 ? to_float(static_cast<const bf16*>(base)[i]) : static_cast<const float*>(base)[i];
  }
  void set(int64_t i, float v) const {
    if (dtype == DType::bf16)
      static_cast<bf16*>(base)[i] = to_bf16(v);
    else
      static_cast<float*>(base)[i] = v;
  }
};

// Walks every element of `spec`'s tensor with its parameter element: f(file_index, part, part_index).
template <typename F>
void for_each_element(const HfTensorSpec& spec, const ParameterLayout& layout, F&& f) {
  int64_t offset = 0;  // along the output dimension
  const int64_t total_out = spec.conv1d ? spec.shape[1] : spec.shape[0];
  for (size_t k = 0; k < spec.parts.size(); ++k) {
    const ParamSpec& ps = layout.params[static_cast<size_t>(spec.parts[k])];
    const int64_t out = ps.dims[0], in = ps.rank == 2 ? ps.dims[1] : 1;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c) {
        // nn.Linear / vectors: row offset + o, column c; Conv1D: row c, column offset + o.
        const int64_t file = spec.conv1d ? c * total_out + offset + o : (offset + o) * in + c;
        f(file, k, o * in + c);
      }
    offset += out;
  }
}

}  // namespace

HfStateDict hf_state_dict(const ModelShape& m) {
  const ParameterLayout layout = parameter_layout(m);
  HfStateDict out;
  if (m.position == Position::learned) {
    gpt2_layout(m, layout, out);
  } else if (m.position == Position::rope) {
    llama_layout(m, layout, out);
  } else {
    no_layout("position",
              fmt::format("{} (GPT-2 learns positions, LLaMA's family rotates them)", position_name(m.position)));
  }
  if (m.block == Block::parallel) no_layout("block", "parallel blocks (Falcon's) are not written");
  return out;
}

std::vector<std::pair<std::string, Tensor>> hf_tensors(const HfStateDict& hf, const ParameterLayout& layout,
                                                       const std::vector<Tensor>& values) {
  check_arg(values.size() == layout.params.size(), "hf_tensors: {} values for {} parameters", values.size(),
            layout.params.size());
  std::vector<std::pair<std::string, Tensor>> out;
  for (const HfTensorSpec& spec : hf.tensors) {
    const Tensor& first = values[static_cast<size_t>(spec.parts.front())];
    if (spec.parts.size() == 1 && !spec.conv1d) {
      out.emplace_back(spec.name, first);
      continue;
    }
    Tensor t = Tensor::empty(spec.shape, Category::temporary, "hf." + spec.name, first.dtype());
    const ElementIo dst{t.dtype(), t.raw_data()};
    for_each_element(spec, layout, [&](int64_t file, size_t k, int64_t i) {
      const Tensor& v = values[static_cast<size_t>(spec.parts[k])];
      dst.set(file, ElementIo{v.dtype(), v.raw_data()}.get(i));
    });
    out.emplace_back(spec.name, std::move(t));
  }
  return out;
}

HfLoadReport load_hf_tensors(const Safetensors& file, const std::string& path, const HfStateDict& hf,
                             const ParameterLayout& layout, const std::vector<Tensor>& values) {
  check_arg(values.size() == layout.params.size(), "load_hf_tensors: {} values for {} parameters", values.size(),
            layout.params.size());
  std::set<std::string> used;
  for (const HfTensorSpec& spec : hf.tensors) {
    const std::string bare = spec.name.starts_with(hf.prefix) ? spec.name.substr(hf.prefix.size()) : spec.name;
    const SafetensorsEntry* e = file.find(spec.name);
    if (e == nullptr && bare != spec.name) e = file.find(bare);
    check_arg(e != nullptr, "--init-from {}: no tensor '{}'{} ({}'s layout)", path, spec.name,
              bare != spec.name ? fmt::format(" or '{}'", bare) : "", hf.architecture);
    check_arg(e->dtype == DType::f32 || e->dtype == DType::bf16,
              "--init-from {}: tensor '{}' is {}; reckon reads F32 "
              "and BF16",
              path, e->name, dtype_name(e->dtype));
    check_arg(e->shape == spec.shape, "--init-from {}: tensor '{}' has shape [{}], this model's is [{}] ({})", path,
              e->name, fmt::join(e->shape, ", "), fmt::join(spec.shape, ", "), hf.architecture);
    used.insert(e->name);
    // One file tensor at a time (a file opened header-only is never held whole).
    std::vector<char> bytes(static_cast<size_t>(e->end - e->begin));
    read_entry_bytes(file, *e, bytes.data());
    const ElementIo src{e->dtype, bytes.data()};
    for_each_element(spec, layout, [&](int64_t at, size_t k, int64_t i) {
      const Tensor& v = values[static_cast<size_t>(spec.parts[k])];
      ElementIo{v.dtype(), v.raw_data()}.set(i, src.get(at));
    });
  }
  HfLoadReport report;
  for (const SafetensorsEntry& e : file.tensors) {
    if (used.count(e.name) == 1) continue;
    const bool buffer = (hf.architecture == "GPT2LMHeadModel" &&
                         (e.name.ends_with(".attn.bias") || e.name.ends_with(".attn.masked_bias"))) ||
                        e.name.ends_with(".rotary_emb.inv_freq");
    const bool tied_head = e.name == "lm_head.weight" && layout.lm_head == layout.tok_emb;
    check_arg(buffer || tied_head, "--init-from {}: tensor '{}' is not part of this model ({}'s layout)", path, e.name,
              hf.architecture);
    report.ignored.push_back(e.name);
  }
  return report;
}

}  // namespace reckon
