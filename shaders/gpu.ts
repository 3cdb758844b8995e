/**
 * The WebGPU runtime every kernel and the model build on: the device with the adapter's real limits,
 * buffers and tensor views, a pipeline cache, and recorded dispatch plans that are replayed each step
 * (no per-step pipeline or bind-group creation).
 *
 * Runs unchanged in Deno and in the browser: only web-standard WebGPU is used.
 * @module
 */

/** A run of 32-bit elements inside a GPUBuffer; what a kernel binds. */
export interface TensorView {
  buffer: GPUBuffer;
  /** Byte offset into `buffer`; a multiple of the adapter's minStorageBufferOffsetAlignment. */
  offset: number;
  /** Number of 32-bit elements. */
  length: number;
  label?: string;
}

/** The limits this project depends on, as granted by the device. */
export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
}

/** Kernels are written for at most this many storage bindings, the WebGPU default and a common cap. */
export const STORAGE_BINDINGS_USED = 8;

/** Thrown when a tensor or a configuration does not fit the adapter; says what was needed and what exists. */
export class GpuCapacityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GpuCapacityError";
  }
}

/** Options for {@link Gpu.create}. */
export interface GpuOptions {
  /** Use this adapter instead of requesting one. */
  adapter?: GPUAdapter;
  powerPreference?: GPUPowerPreference;
  /**
   * Which kernel family to run where the two differ (see {@link Gpu.kernels}): "cpu" or "gpu" forces one
   * on any adapter (the tests check both everywhere); "auto" (the default) detects it from the adapter.
   */
  kernels?: "auto" | KernelFamily;
}

/** The two kernel families: written for CPU implementations of WebGPU, or for GPUs. */
export type KernelFamily = "cpu" | "gpu";

/** What a run records about its device: {@link Gpu.describe}. */
export interface GpuDescription {
  /** The wgpu backend Deno was asked for (DENO_WEBGPU_BACKEND; "default" = wgpu's choice), or "browser". */
  backend: string;
  /** The adapter's GPUAdapterInfo. */
  adapter: { vendor: string; architecture: string; device: string; description: string; fallback: boolean };
  /** The kernel family in use. */
  kernels: KernelFamily;
  /** Features enabled on the device, sorted. */
  features: string[];
}

/**
 * The wgpu backend asked of Deno through DENO_WEBGPU_BACKEND (Deno does not report the one it picked:
 * on Linux with a Vulkan driver installed, the default is Vulkan), "browser" outside Deno.
 */
function requestedBackend(): string {
  const deno = (globalThis as { Deno?: { env: { get(name: string): string | undefined } } }).Deno;
  if (!deno) return "browser";
  try {
    return deno.env.get("DENO_WEBGPU_BACKEND") || "default";
  } catch {
    return "unknown (no permission to read DENO_WEBGPU_BACKEND)";
  }
}

/**
 * Mesa llvmpipe (22.x) stops every loop of a shader invocation once the invocation has run this many
 * loop iterations in total, counted across all its loops, and goes on with wrong values and no error.
 * Kernels written for CPU adapters keep each thread's total below it (checked where they are recorded);
 * the GPU-style kernels split long loops over a workgroup's threads.
 */
export const LLVMPIPE_LOOP_LIMIT = 65535;

/** Adapter names of the CPU implementations of WebGPU: Mesa's llvmpipe/lavapipe and SwiftShader. */
const CPU_ADAPTER = /llvmpipe|lavapipe|swiftshader|softpipe|software|\bcpu\b/i;

/**
 * Throw a RangeError naming the kernel, the operand and its view unless every view in `views` holds at
 * least `elements` 32-bit elements.
 */
export function checkLengths(kernel: string, elements: number, views: Record<string, TensorView>): void {
  for (const [name, view] of Object.entries(views)) {
    if (view.length < elements) {
      throw new RangeError(
        `${kernel}: ${name} needs ${elements} elements, ${view.label ?? "its view"} has ${view.length}`,
      );
    }
  }
}

/** The device, its limits, caches and a byte count of everything allocated. */
export class Gpu {
  readonly device: GPUDevice;
  readonly limits: GpuLimits;
  readonly adapterName: string;
  /**
   * The kernel family: "cpu" when the adapter runs shaders on the CPU (llvmpipe, lavapipe, SwiftShader)
   * or {@link GpuOptions.kernels} forces it. A workgroup barrier there is a coroutine switch and lanes are
   * SIMD lanes of one core, so row-wise kernels (LayerNorm) keep one row per thread instead of one row
   * per workgroup with tree reductions, and the matmul keeps large register tiles straight from storage
   * instead of the workgroup-memory kernels of `matmul_tiled.ts`.
   */
  readonly kernels: KernelFamily;
  /** {@link kernels} is "cpu". */
  get cpuLike(): boolean {
    return this.kernels === "cpu";
  }
  readonly #description: Omit<GpuDescription, "features">;
  /** The device has `shader-f16`: WGSL may `enable f16;` (mixed precision, model/precision.ts). */
  get shaderF16(): boolean {
    return this.device.features.has("shader-f16");
  }
  /** Bytes of all live buffers made through this object. */
  allocatedBytes = 0;
  #pipelines = new Map<string, GPUComputePipeline>();
  #modules = new Map<string, GPUShaderModule>();
  #errors: string[] = [];

  private constructor(device: GPUDevice, adapterName: string, description: Omit<GpuDescription, "features">) {
    this.device = device;
    this.adapterName = adapterName;
    this.kernels = description.kernels;
    this.#description = description;
    // WebGPU reports invalid shaders and bindings asynchronously and otherwise silently skips the work;
    // collect them so the next read or sync fails loudly instead of returning stale numbers.
    device.addEventListener("uncapturederror", (e) => {
      this.#errors.push((e as GPUUncapturedErrorEvent).error.message);
    });
    const l = device.limits;
    this.limits = {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    };
  }

  /** Request an adapter and a device with the adapter's full limits. Throws a clear error without WebGPU. */
  static async create(options: GpuOptions = {}): Promise<Gpu> {
    const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
    if (!gpu && !options.adapter) {
      throw new GpuCapacityError("WebGPU is not available here (navigator.gpu is undefined)");
    }
    const adapter = options.adapter ??
      await gpu!.requestAdapter({ powerPreference: options.powerPreference ?? "high-performance" });
    if (!adapter) throw new GpuCapacityError("WebGPU is present but no adapter was found");
    const a = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
      maxBufferSize: a.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(a.maxStorageBuffersPerShaderStage, STORAGE_BINDINGS_USED),
      maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: a.maxComputeWorkgroupsPerDimension,
    };
    if (a.maxStorageBuffersPerShaderStage < STORAGE_BINDINGS_USED) {
      throw new GpuCapacityError(
        `adapter allows ${a.maxStorageBuffersPerShaderStage} storage buffers per shader stage; ` +
          `the kernels need ${STORAGE_BINDINGS_USED}`,
      );
    }
    // f16 kernels (mixed precision) need the feature on the device; ask for it wherever the adapter has it.
    const requiredFeatures: GPUFeatureName[] = adapter.features.has("shader-f16") ? ["shader-f16"] : [];
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
    const info = adapter.info;
    const name = [info?.vendor, info?.architecture, info?.device, info?.description]
      .filter((s) => s && s !== "0").join(" ") || "unknown adapter";
    const fallback = (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
      (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter === true;
    const detected: KernelFamily = fallback || CPU_ADAPTER.test(name) ? "cpu" : "gpu";
    const kernels = !options.kernels || options.kernels === "auto" ? detected : options.kernels;
    if (kernels !== "cpu" && kernels !== "gpu") {
      throw new RangeError(
        `Gpu.create: kernels must be "auto", "cpu" or "gpu", got ${JSON.stringify(kernels)}`,
      );
    }
    const text = (s: string | undefined) => s ?? "";
    return new Gpu(device, name, {
      backend: requestedBackend(),
      adapter: {
        vendor: text(info?.vendor),
        architecture: text(info?.architecture),
        device: text(info?.device),
        description: text(info?.description),
        fallback,
      },
      kernels,
    });
  }

  /** The backend, adapter, kernel family and device features: what every run's log and files record. */
  describe(): GpuDescription {
    return {
      ...this.#description,
      adapter: { ...this.#description.adapter },
      features: [...this.device.features].sort(),
    };
  }

  /** A compute pipeline for `code`, compiled once and cached by its source. */
  pipeline(code: string, entryPoint = "main"): GPUComputePipeline {
    const key = entryPoint + "\u0000" + code;
    let p = this.#pipelines.get(key);
    if (!p) {
      let module = this.#modules.get(code);
      if (!module) {
        module = this.device.createShaderModule({ code });
        this.#modules.set(code, module);
      }
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint } });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  /** A raw buffer; counted in {@link allocatedBytes}. */
  buffer(bytes: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.limits.maxBufferSize) {
      throw new GpuCapacityError(
        `buffer ${
          label ?? ""
        } needs ${size} bytes; the adapter's maxBufferSize is ${this.limits.maxBufferSize}`,
      );
    }
    const b = this.device.createBuffer({ size, usage, label });
    this.allocatedBytes += size;
    return b;
  }

  /** A storage tensor of `length` f32/u32 elements in a buffer of its own. Must fit one binding. */
  tensor(length: number, label?: string): TensorView {
    const bytes = Math.max(1, length) * 4;
    if (bytes > this.limits.maxStorageBufferBindingSize) {
      throw new GpuCapacityError(
        `tensor ${label ?? ""} needs ${bytes} bytes in one binding; the adapter's ` +
          `maxStorageBufferBindingSize is ${this.limits.maxStorageBufferBindingSize} (split it)`,
      );
    }
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    return { buffer: this.buffer(bytes, usage, label), offset: 0, length, label };
  }

  /**
   * A uniform block holding `data` (written now), bound like any tensor. The caller frees it; kernels make
   * theirs through {@link Plan.params}, so the plan that binds a block owns it.
   */
  uniform(data: ArrayBufferView | ArrayBuffer, label?: string): TensorView {
    const bytes = data instanceof ArrayBuffer ? data.byteLength : data.byteLength;
    const buffer = this.buffer(bytes, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label);
    this.writeBytes(buffer, 0, data);
    return { buffer, offset: 0, length: Math.ceil(bytes / 4), label };
  }

  /** Write bytes into a buffer at a byte offset. */
  writeBytes(buffer: GPUBuffer, offset: number, data: ArrayBufferView | ArrayBuffer): void {
    const src = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    const padded = bytes.byteLength % 4 === 0 ? bytes : (() => {
      const p = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      p.set(bytes);
      return p;
    })();
    this.device.queue.writeBuffer(buffer, offset, padded as Uint8Array<ArrayBuffer>);
  }

  /** Write elements into a view (from its start, or `startElement`). */
  write(view: TensorView, data: Float32Array | Uint32Array | Int32Array, startElement = 0): void {
    if (startElement + data.length > view.length) {
      throw new RangeError(
        `write of ${data.length} elements at ${startElement} overflows ${
          view.label ?? "tensor"
        } of ${view.length}`,
      );
    }
    this.writeBytes(view.buffer, view.offset + startElement * 4, data);
  }

  /** Copy a view back to the CPU. Meant for tests, metrics and small results only. */
  async readBytes(
    view: TensorView,
    startElement = 0,
    count = view.length - startElement,
  ): Promise<ArrayBuffer> {
    const bytes = count * 4;
    const staging = this.device.createBuffer({
      size: Math.max(16, Math.ceil(bytes / 16) * 16),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(view.buffer, view.offset + startElement * 4, staging, 0, Math.ceil(bytes / 4) * 4);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange(0, bytes).slice(0);
    staging.unmap();
    staging.destroy();
    this.throwIfErrors();
    return out;
  }

  /** Read a view as f32. */
  async read(view: TensorView, startElement = 0, count?: number): Promise<Float32Array> {
    return new Float32Array(await this.readBytes(view, startElement, count));
  }

  /** Read a view as u32. */
  async readU32(view: TensorView, startElement = 0, count?: number): Promise<Uint32Array> {
    return new Uint32Array(await this.readBytes(view, startElement, count));
  }

  /** A bind group for `pipeline` where binding i is `views[i]`. Make these once, at plan-building time. */
  bindGroup(pipeline: GPUComputePipeline, views: TensorView[], label?: string): GPUBindGroup {
    return this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: views.map((v, i) => ({
        binding: i,
        resource: { buffer: v.buffer, offset: v.offset, size: Math.ceil((v.length * 4) / 4) * 4 },
      })),
    });
  }

  /** Free a buffer made by this object. */
  free(view: TensorView | GPUBuffer): void {
    const b = "buffer" in view ? view.buffer : view;
    this.allocatedBytes -= b.size;
    b.destroy();
  }

  /** Resolves when all submitted work has finished; throws if the device reported an error. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.throwIfErrors();
  }

  /** Throw (once) the WebGPU errors reported since the last check. */
  throwIfErrors(): void {
    if (this.#errors.length === 0) return;
    const msg = this.#errors.join("\n");
    this.#errors = [];
    throw new Error(`WebGPU error: ${msg}`);
  }
}

/** One recorded kernel launch. */
export interface Dispatch {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
  label?: string;
}

/**
 * Split `count` workgroups over x and y so neither exceeds the per-dimension limit. Kernels read the
 * linear index as `wgIndex` ({@link computeMain}) and bounds-check it.
 */
export function grid(gpu: Gpu, count: number): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [Math.max(1, count), 1, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y, 1];
}

/**
 * A list of dispatches recorded once and replayed: the training step, a generation step, a scoring
 * batch. Encoding a plan makes no pipelines or bind groups. The plan owns the uniform blocks recorded
 * into it ({@link params}); {@link destroy} frees them.
 */
export class Plan {
  readonly dispatches: Dispatch[] = [];
  readonly gpu: Gpu;
  #uniforms: TensorView[] = [];
  constructor(gpu: Gpu) {
    this.gpu = gpu;
  }

  /** A uniform block of `layout` holding `values`, owned (and freed) by this plan. */
  params<F extends UniformFields>(
    layout: UniformLayout<F>,
    values: UniformValues<F>,
    label?: string,
  ): TensorView {
    const u = this.gpu.uniform(layout.pack(values), label);
    this.#uniforms.push(u);
    return u;
  }

  /** Record a launch of `code` with binding i = views[i]. */
  add(
    code: string,
    views: TensorView[],
    workgroups: number | [number, number, number],
    label?: string,
  ): void {
    const pipeline = this.gpu.pipeline(code);
    const bindGroup = this.gpu.bindGroup(pipeline, views, label);
    const wg: [number, number, number] = typeof workgroups === "number"
      ? grid(this.gpu, workgroups)
      : workgroups;
    if (wg[0] * wg[1] * wg[2] === 0) return;
    this.dispatches.push({ pipeline, bindGroup, workgroups: wg, label });
  }

  /** Append another plan's dispatches; their uniform blocks stay owned by `other`, which must outlive this plan's use. */
  append(other: Plan): void {
    this.dispatches.push(...other.dispatches);
  }

  /** Encode every dispatch into one compute pass of `encoder`. */
  encode(encoder: GPUCommandEncoder): void {
    if (this.dispatches.length === 0) return;
    const pass = encoder.beginComputePass();
    for (const d of this.dispatches) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
    }
    pass.end();
  }

  /** Encode and submit as one command buffer. */
  run(): void {
    const enc = this.gpu.device.createCommandEncoder();
    this.encode(enc);
    this.gpu.device.queue.submit([enc.finish()]);
  }

  /** Free the uniform blocks this plan owns and forget its dispatches; the plan is empty afterwards. */
  destroy(): void {
    for (const u of this.#uniforms) this.gpu.free(u);
    this.#uniforms = [];
    this.dispatches.length = 0;
  }
}

/** The scalar types a uniform block holds; each takes 4 bytes. */
export type UniformType = "u32" | "i32" | "f32";
/** Field names of a uniform block and their types, in declaration order. */
export type UniformFields = Record<string, UniformType>;
/** One value per field of a uniform block. */
export type UniformValues<F extends UniformFields> = { [K in keyof F]: number };

/**
 * A kernel's uniform block declared once: `wgsl` is the WGSL `Params` struct and its binding 0 as `p`,
 * `pack` writes values in the same field order, 4 bytes each.
 */
export interface UniformLayout<F extends UniformFields> {
  readonly fields: F;
  readonly wgsl: string;
  pack(values: UniformValues<F>): ArrayBuffer;
}

/**
 * Declare a uniform block from its fields, e.g. `uniformLayout({ n: "u32", scale: "f32" })`. Only
 * scalar members, so WGSL lays them out 4 bytes apart in order, as `pack` writes them.
 */
export function uniformLayout<F extends UniformFields>(fields: F): UniformLayout<F> {
  const entries = Object.entries(fields);
  const wgsl = `struct Params { ${entries.map(([name, type]) => `${name}: ${type}`).join(", ")} }
@group(0) @binding(0) var<uniform> p: Params;
`;
  return {
    fields,
    wgsl,
    pack(values) {
      const buf = new ArrayBuffer(Math.max(16, Math.ceil((entries.length * 4) / 16) * 16));
      const dv = new DataView(buf);
      entries.forEach(([name, type], i) => {
        const value = values[name];
        if (type === "f32") dv.setFloat32(i * 4, value, true);
        else if (type === "i32") dv.setInt32(i * 4, value, true);
        else dv.setUint32(i * 4, value, true);
      });
      return buf;
    },
  };
}

/** How a kernel binds a storage buffer: its access mode and WGSL type, e.g. `read array<vec4f>`. */
export type StorageDecl = `${"read" | "read_write"} ${string}`;

/**
 * The storage bindings of a kernel, numbered from `first` (1 after the uniform block) in the order given:
 * outputs first, then inputs, the same order as the views its recording function binds.
 */
export function storage(buffers: Record<string, StorageDecl>, first = 1): string {
  return Object.entries(buffers).map(([name, decl], i) => {
    const [access, type] = [decl.slice(0, decl.indexOf(" ")), decl.slice(decl.indexOf(" ") + 1)];
    return `@group(0) @binding(${first + i}) var<storage, ${access}> ${name}: ${type};`;
  }).join("\n") + "\n";
}

/**
 * The entry point every kernel opens with: `main` with the builtins `wid`, `nwg`, `li` (local index) and
 * `lid` (local id), and `wgIndex`, the linear workgroup index of a {@link grid} dispatch
 * (`wid.x + wid.y * nwg.x`). For a 1-D workgroup also `globalIndex` = wgIndex * size + li.
 */
export function computeMain(size: number | [number, number]): string {
  const [x, y] = typeof size === "number" ? [size, 1] : size;
  return `@compute @workgroup_size(${x}${y > 1 ? `, ${y}` : ""})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32, @builtin(local_invocation_id) lid: vec3u) {
  let wgIndex = wid.x + wid.y * nwg.x;
${y === 1 ? `  let globalIndex = wgIndex * ${x}u + li;\n` : ""}`;
}
