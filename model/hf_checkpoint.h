// Hugging Face state dicts: reckon's parameters under the names and layouts a transformers model class keeps them,
// so that a checkpoint reckon writes loads into PyTorch (`--save-format hf`) and a file PyTorch wrote starts a
// reckon run (`--init-from`).
//
// Two layouts, chosen from the config (hf_state_dict names the field that fits neither):
//   GPT2LMHeadModel (LayerNorm with β, biases on every linear, a 2-matrix GELU MLP, learned positions, multi-head
//     attention, pre-norm sequential blocks): transformer.wte, .wpe, .h.<l>.ln_1, .attn.c_attn (q, k and v fused),
//     .attn.c_proj, .ln_2, .mlp.c_fc, .mlp.c_proj, transformer.ln_f, lm_head (untied only). Its linears are
//     Conv1D: a weight is stored (in, out), the transpose of nn.Linear's (out, in), so each part is transposed;
//     c_attn's weight is (D, 3D) with q, k, v side by side, its bias q, k, v end to end.
//   LLaMA's family (RMSNorm, RoPE, a gated MLP, no learned positions): model.embed_tokens, model.layers.<l>.
//     self_attn.{q,k,v,o}_proj (biases where attention_bias puts them), mlp.{gate,up,down}_proj, model.norm,
//     lm_head (untied only); the norms by placement: pre (LlamaForCausalLM, MistralForCausalLM with a window on every
//     layer, Qwen2ForCausalLM with q/k/v biases) input_layernorm and post_attention_layernorm (the one before the
//     MLP, despite its name); post with q/k norms (Olmo2ForCausalLM) post_attention_layernorm,
//     post_feedforward_layernorm, self_attn.q_norm, self_attn.k_norm; sandwich (Gemma2ForCausalLM) input_layernorm,
//     post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm. nn.Linear layout: each
//     tensor is one reckon parameter as it is (rotate_half RoPE, as reckon's: no permutation).
// A tied head has no tensor of its own (transformers ties lm_head to the embedding on load).
#pragma once

#include <string>
#include <vector>

#include "model/config.h"
#include "model/layout.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace reckon {

struct HfTensorSpec {
  std::string name;        // the full state-dict key: "transformer.h.0.attn.c_attn.weight", "lm_head.weight"
  std::vector<int> parts;  // reckon parameters (indices into ParameterLayout::params) end to end along the output
  bool conv1d = false;     // GPT-2's Conv1D: a matrix stored (in, out): each part transposed, parts side by side
  Shape shape;             // the tensor's shape in the file
};

struct HfStateDict {
  std::string architecture;  // "GPT2LMHeadModel", "LlamaForCausalLM", …
  std::string prefix;        // the base model's key prefix ("transformer.", "model."): files saved from the base
                             // model class (GPT-2's on the Hub) omit it, and are read either way
  std::vector<HfTensorSpec> tensors;
};

// The Hugging Face layout of a config's parameters. Throws std::invalid_argument naming the field that no supported
// transformers class has (e.g. "position: alibi: no Hugging Face layout reckon writes has it").
HfStateDict hf_state_dict(const ModelShape& m);

// The tensors of an HF-format file for `values` (the parameters' values in layout order, any dtype reckon keeps):
// a one-part nn.Linear tensor is the parameter itself (no copy); fused or transposed ones are assembled into
// temporaries "hf.<name>" of the parameters' dtype.
std::vector<std::pair<std::string, Tensor>> hf_tensors(const HfStateDict& hf, const ParameterLayout& layout,
                                                       const std::vector<Tensor>& values);

// What loading a file found beyond the tensors it copied.
struct HfLoadReport {
  std::vector<std::string> ignored;  // buffers and tied copies transformers also skips, by name
};

// Copies an HF-format file's tensors into `values` (layout order): each named with or without the prefix, float32 or
// bfloat16 (converted to the parameter's dtype: widening exactly, narrowing rounded to nearest even), shaped as the
// spec says. Skipped and reported: GPT-2's causal-mask buffers (h.<l>.attn.bias, .attn.masked_bias), LLaMA's
// rotary inv_freq buffers, lm_head.weight of a tied model (transformers re-ties it). Throws std::invalid_argument
// naming the file and the tensor for a missing, misshapen, other-dtype or unknown tensor.
HfLoadReport load_hf_tensors(const Safetensors& file, const std::string& path, const HfStateDict& hf,
                             const ParameterLayout& layout, const std::vector<Tensor>& values);

}  // namespace reckon
