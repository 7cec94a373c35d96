/**
 * lcblm: concept-based interpretability of language models, in Deno + TypeScript.
 * This module re-exports the public API; the stages in `stages/` are the command-line entry points.
 * @module
 */
export { configToToml, loadConfig, validateConfig } from "./core/config.ts";
export { type Config, ConfigSchema } from "./core/config_schema.ts";
export { EmbeddingsReader, type TokenRows } from "./core/embeddings_store.ts";
export { UserError } from "./core/user_error.ts";
export { type Backbone, loadBackbone } from "./backbone/load_backbone.ts";
export { findLmHead, withHiddenStateOutput } from "./backbone/lm_head.ts";
export { trainByteLevelBpe } from "./backbone/bpe.ts";
export { gpt2OnnxModel, writeGpt2Folder } from "./backbone/gpt2_onnx.ts";
export { loadCorpus } from "./data/corpus.ts";
export { extract } from "./stages/extract.ts";
