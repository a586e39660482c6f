#include "optim/step.h"

#include "model/data.h"

namespace reckon {

double training_step(Transformer& model, AdamW& optimizer, const Tensor& tokens, const Tensor& targets) {
  {
    PhaseScope phase(Phase::optimizer);
    model.zero_grad();
  }
  const double loss = model.forward(tokens, targets);
  model.backward();
  optimizer.step();
  return loss;
}

TrainingSession::TrainingSession(const TrainConfig& config)
    : model(config.model, config.seed),
      optimizer(model.parameters(), config.optim),
      tokens(Tensor::empty({config.model.batch_size, config.model.context_length}, Category::activation,
                           "batch.tokens", DType::i32)),
      targets(Tensor::empty({config.model.batch_size, config.model.context_length}, Category::activation,
                            "batch.targets", DType::i32)) {}

StepMeasurement measure_steady_step(const TrainConfig& config) {
  StepMeasurement out;
  TrainingSession run(config);
  TokenData data = TokenData::random(config.model.vocab_size, config.seed);
  data.fill_batch(run.tokens, run.targets, 0);
  run.step();
  data.fill_batch(run.tokens, run.targets, 1);
  counters().reset();
  tracker().reset_peak_stats();
  out.loss = run.step();
  out.memory = tracker().stats();
  out.live_at_peak = tracker().live_at_peak();
  for (const LiveBlock& b : out.live_at_peak) {
    if (b.name.rfind("onednn.scratchpad.", 0) == 0) out.scratchpad_at_peak += b.allocated_bytes;
  }
  out.counts = counters().by_op();
  return out;
}

}  // namespace reckon
