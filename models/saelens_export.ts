/**
 * Export an SAE in the SAELens layout (`cfg.json` + `sae_weights.safetensors`) that SAELens,
 * SAEBench and Neuronpedia tooling load, with our per-feature standardisation folded in so the
 * exported SAE reads raw hidden states:
 *
 *   encoder: W_e((x − μ)/σ − b) + b_e = (W_e/σ)(x − (μ + σ⊙b)) + b_e
 *   decoder: σ⊙(W_dᵀz + b) + μ = (W_d⊙σ)ᵀz + (μ + σ⊙b)
 *
 * so W_enc = (W_e/σ)ᵀ [d, m], W_dec = W_d⊙σ [m, d], b_dec = μ + σ⊙b, b_enc = b_e, with
 * `apply_b_dec_to_input` true. Decoder rows are then no longer unit norm (SAELens does not
 * require it); the standardisation is also recorded in cfg.json.
 * @module
 */
import type { Config } from "../core/config_schema.ts";
import type { NamedTensor } from "../core/train/safetensors.ts";

/** The SAE tensors we train, in standardised space. */
export interface SaeWeightsForExport {
  we: Float32Array; // [m, d]
  be: Float32Array; // [m]
  wd: Float32Array; // [m, d]
  b: Float32Array; // [d]
}

/**
 * Build the SAELens files.
 *
 * @param w Trained weights (standardised space).
 * @param norm Per-feature mean and std of the standardisation.
 * @param cfg The `[sae]` settings.
 * @param provenance Model id, context size, BOS, dataset.
 * @returns `cfg.json` contents and the safetensors tensors.
 */
export function saeLensExport(
  w: SaeWeightsForExport,
  norm: { mean: Float32Array; std: Float32Array },
  cfg: Config["sae"],
  provenance: { modelName: string; contextSize: number; prependBos: boolean; dataset: string },
): { cfg: Record<string, unknown>; tensors: Record<string, NamedTensor> } {
  const d = norm.mean.length;
  const m = w.be.length;
  const wEnc = new Float32Array(d * m); // [d, m]
  const wDec = new Float32Array(m * d); // [m, d]
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < d; j++) {
      wEnc[j * m + i] = w.we[i * d + j] / norm.std[j];
      wDec[i * d + j] = w.wd[i * d + j] * norm.std[j];
    }
  }
  const bDec = Float32Array.from(norm.mean, (mu, j) => mu + norm.std[j] * w.b[j]);
  const topk = cfg.kind === "topk";
  return {
    cfg: {
      architecture: topk ? "topk" : "standard",
      d_in: d,
      d_sae: m,
      dtype: "float32",
      device: "cpu",
      activation_fn_str: topk ? "topk" : "relu",
      activation_fn_kwargs: topk ? { k: cfg.k } : {},
      apply_b_dec_to_input: true,
      finetuning_scaling_factor: false,
      normalize_activations: "none",
      model_name: provenance.modelName,
      hook_name: "last_hidden_state (after the final norm)",
      hook_layer: -1,
      hook_head_index: null,
      context_size: provenance.contextSize,
      prepend_bos: provenance.prependBos,
      dataset_path: provenance.dataset,
      lcblm_standardisation: "folded into W_enc, W_dec and b_dec",
      lcblm_norm_mean: Array.from(norm.mean),
      lcblm_norm_std: Array.from(norm.std),
    },
    tensors: {
      W_enc: { dtype: "F32", shape: [d, m], data: wEnc },
      b_enc: { dtype: "F32", shape: [m], data: w.be.slice() },
      W_dec: { dtype: "F32", shape: [m, d], data: wDec },
      b_dec: { dtype: "F32", shape: [d], data: bDec },
    },
  };
}
