/**
 * The `webgpu` TensorFlow.js backend on Deno's `navigator.gpu`. Deno with Mesa's Vulkan
 * drivers offers a software adapter (llvmpipe, `isFallbackAdapter`); without any Vulkan driver
 * the adapter is null. Reading tensors needs the async `data()`/`array()`: `dataSync()` fails
 * in Deno (tfjs reads through a canvas there).
 * @module
 */

/** What `navigator.gpu` offers. */
export interface GpuProbe {
  /** Whether an adapter was found at all. */
  found: boolean;
  /** Whether it is a software (fallback) adapter such as Mesa's llvmpipe. */
  fallback: boolean;
  /** The adapter's description, vendor or "none". */
  description: string;
}

type GpuAdapterLike = {
  isFallbackAdapter?: boolean;
  info?: { isFallbackAdapter?: boolean; description?: string; vendor?: string };
};
type NavigatorGpu = {
  gpu?: { requestAdapter(o?: { powerPreference?: string }): Promise<GpuAdapterLike | null> };
};

/**
 * Asks `navigator.gpu` for the adapter tfjs would use (high-performance preference).
 *
 * @returns Whether one exists, whether it is a software one, and its description.
 */
export async function probeGpu(): Promise<GpuProbe> {
  const gpu = (navigator as unknown as NavigatorGpu).gpu;
  const adapter = gpu ? await gpu.requestAdapter({ powerPreference: "high-performance" }) : null;
  if (!adapter) return { found: false, fallback: false, description: "none" };
  const info = adapter.info ?? {};
  return {
    found: true,
    fallback: Boolean(adapter.isFallbackAdapter ?? info.isFallbackAdapter),
    description: info.description || info.vendor || "unknown adapter",
  };
}

/** Imports `@tensorflow/tfjs-backend-webgpu`, which registers the "webgpu" backend. */
export async function registerWebGpuBackend(): Promise<void> {
  await import("@tensorflow/tfjs-backend-webgpu");
}
