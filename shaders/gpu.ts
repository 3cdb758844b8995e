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
  /** Treat the adapter as a CPU rasteriser (see {@link Gpu.cpuLike}); default: detected from its name. */
  cpuLike?: boolean;
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

/** Elements needed so that a tensor starting after `length` elements keeps offset alignment. */
export function alignElements(length: number, alignmentBytes: number): number {
  const per = alignmentBytes / 4;
  return Math.ceil(length / per) * per;
}

/** The device, its limits, caches and a byte count of everything allocated. */
export class Gpu {
  readonly device: GPUDevice;
  readonly limits: GpuLimits;
  readonly adapterName: string;
  /**
   * The adapter runs shaders on the CPU (llvmpipe, SwiftShader): a workgroup barrier there is a
   * coroutine switch and lanes are SIMD lanes of one core, so row-wise kernels (LayerNorm) keep one
   * row per thread instead of one row per workgroup with tree reductions.
   */
  readonly cpuLike: boolean;
  /** Bytes of all live buffers made through this object. */
  allocatedBytes = 0;
  #pipelines = new Map<string, GPUComputePipeline>();
  #modules = new Map<string, GPUShaderModule>();
  #errors: string[] = [];

  private constructor(device: GPUDevice, adapterName: string, cpuLike: boolean) {
    this.device = device;
    this.adapterName = adapterName;
    this.cpuLike = cpuLike;
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
    const device = await adapter.requestDevice({ requiredLimits });
    const info = adapter.info;
    const name = [info?.vendor, info?.architecture, info?.device, info?.description]
      .filter((s) => s && s !== "0").join(" ") || "unknown adapter";
    const fallback = (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
      (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter === true;
    return new Gpu(device, name, options.cpuLike ?? (fallback || CPU_ADAPTER.test(name)));
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

  /** A uniform block holding `data` (written now). Views returned here are bound like any tensor. */
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
 * Split `count` workgroups over x and y so neither exceeds the per-dimension limit. Kernels rebuild the
 * linear index as `wid.x + wid.y * nwg.x` (with `@builtin(num_workgroups) nwg`) and bounds-check it.
 */
export function grid(gpu: Gpu, count: number): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [Math.max(1, count), 1, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y, 1];
}

/**
 * A list of dispatches recorded once and replayed: the training step, a generation step, a scoring
 * batch. Encoding a plan makes no pipelines or bind groups.
 */
export class Plan {
  readonly dispatches: Dispatch[] = [];
  readonly gpu: Gpu;
  constructor(gpu: Gpu) {
    this.gpu = gpu;
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

  /** Append another plan's dispatches. */
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
}

/**
 * Pack a uniform block from a list of fields; `u` = u32, `i` = i32, `f` = f32. Each field takes
 * 4 bytes in declaration order, so the WGSL struct must use only scalar u32/i32/f32 members.
 */
export function packUniform(fields: Array<["u" | "i" | "f", number]>): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const dv = new DataView(buf);
  fields.forEach(([kind, value], i) => {
    if (kind === "f") dv.setFloat32(i * 4, value, true);
    else if (kind === "i") dv.setInt32(i * 4, value, true);
    else dv.setUint32(i * 4, value, true);
  });
  return buf;
}
