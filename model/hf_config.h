// A Hugging Face `config.json` as a reckon config: the model types reckon models, their keys mapped to reckon's
// fields (Hugging Face's own defaults for the keys a file may leave out), every other key either known to change
// nothing about a training step's bytes and FLOPs (listed as ignored) or refused, naming it.
//
//   llama, mistral, phi3 (phi3's fused qkv_proj and gate_up_proj hold the same weights as separate matrices):
//     vocab_size, hidden_size → d_model, intermediate_size → d_ff, num_hidden_layers → num_layers,
//     num_attention_heads → num_heads, num_key_value_heads → num_kv_heads (absent: = num_heads), head_dim (absent:
//     hidden_size / num_attention_heads), max_position_embeddings → context_length, rms_norm_eps → norm_eps
//     (absent: 1e-6, as LlamaConfig), rope_theta (absent: 10000), rope_scaling (null, or rope_type / type linear
//     with factor, or llama3 with factor, low_freq_factor, high_freq_factor, original_max_position_embeddings →
//     the rope_* fields; other kinds refused), tie_word_embeddings → tie_embeddings (absent:
//     false), sliding_window (absent or null: none; Mistral's default when absent is 4096, as MistralConfig);
//     position = rope, ffn = swiglu (hidden_act must be silu), attention_bias true → attention_bias = qkvo (LLaMA's
//     biases on q, k, v and o).
//   qwen2: the same keys, and q, k and v always carry biases (attention_bias = qkv, as Qwen2Attention; no key);
//     use_sliding_window true (windows from max_window_layers up) is refused; absent or false: no window.
//   layer_types (either family; newer transformers write it): all "full_attention" → no window, all
//     "sliding_attention" → the window on every layer, full exactly every p-th layer → sliding_window_pattern p;
//     other arrangements refused.
//   gpt2 (GPT2LMHeadModel): vocab_size, n_embd → d_model, n_layer → num_layers, n_head → num_heads, n_positions →
//     context_length, n_inner → d_ff (null or absent: 4·n_embd), activation_function (gelu_new (default) and
//     gelu_pytorch_tanh → gelu_tanh_mlp, gelu → gelu_mlp), layer_norm_epsilon → norm_eps (absent: 1e-5),
//     tie_word_embeddings (absent: true); always LayerNorm with β, biases on every linear (attention_bias = qkvo,
//     mlp_bias), learned positions. scale_attn_weights false, scale_attn_by_inverse_layer_idx and
//     reorder_and_upcast_attn true are refused.
//   falcon (FalconForCausalLM, the original decoder): vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
//     max_position_embeddings (absent: 2048), multi_query (absent: true → one K/V head), parallel_attn (absent: true →
//     block = parallel), bias (absent: false; true → biases on every linear), ffn_hidden_size (absent: 4·D),
//     activation (gelu (default) → gelu_mlp; gelu_new, gelu_pytorch_tanh → gelu_tanh_mlp), layer_norm_epsilon,
//     rope_theta, rope_scaling, tie_word_embeddings (absent: true); always LayerNorm with β and RoPE.
//     new_decoder_architecture, alibi and apply_residual_connection_post_layernorm true are refused.
//   Dropout keys (attention_dropout, resid_pdrop, embd_pdrop, attn_pdrop, …) are read and, when not 0, listed as
//   left out: reckon counts the step without dropout.
//   Refused, naming what is not modelled: gemma2, olmo2, mixtral (experts), any other model_type (the
//   supported ones are listed).
//
// The vocabulary, widths, depth, head count and context keys are required (a hub config.json always has them):
// a missing one is refused rather than filled with a default the file did not choose.
// Input limits: a regular file of at most 1 MiB, JSON nested at most 8 deep; errors throw std::invalid_argument
// naming the file and the key. Ranges are validate()'s (model/config.h), run by the command after its --set
// overrides.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace reckon {

struct HfConfig {
  TrainConfig config;  // preset "hf:<model_type>", the file's model and reckon's run defaults
  std::string model_type;
  std::vector<std::string> ignored;  // keys read and known to change nothing reckon counts, in file order
  // Training-time settings the file turns on and reckon's counted step leaves out ("attn_pdrop = 0.1 (dropout: …)").
  std::vector<std::string> left_out;
};

HfConfig load_hf_config(const std::string& path);
// The same on text already read (`path` names it in messages): the fuzz target's entry point.
HfConfig parse_hf_config_text(const std::string& text, const std::string& path);
// The model types load_hf_config accepts.
std::vector<std::string> hf_model_types();

}  // namespace reckon
