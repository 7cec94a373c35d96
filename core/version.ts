/**
 * The lcblm version recorded in every artifact's provenance.
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** The version from deno.json. */
export const LCBLM_VERSION: string = denoJson.version;
