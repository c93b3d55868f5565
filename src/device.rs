//! Picking the compute device: `--device auto|flex|wgpu|cuda`.
//! `auto` takes a real GPU when there is one (CUDA when built with the `cuda` feature, else
//! wgpu: Vulkan, Metal or DX12) and burn's `flex` CPU backend otherwise. A software adapter
//! (Mesa's lavapipe) is not a GPU for `auto`: flex is much faster on a CPU.

use crate::config::DeviceChoice;
use burn::tensor::Device;

/// The chosen device and a line describing it.
pub struct Selected {
    pub device: Device,
    pub description: String,
}

/// The graphics APIs dfm computes on, best first: Vulkan (Linux, Android, Windows), Metal
/// (macOS, iOS), DX12 (Windows). Never OpenGL: wgpu's GL backend is no compute backend worth
/// training on, and Mesa's EGL fails when a second thread opens it (`BadAccess`).
#[cfg(feature = "wgpu")]
fn compute_apis() -> &'static [burn::tensor::wgpu::WgpuBackend] {
    use burn::tensor::wgpu::WgpuBackend as B;
    if cfg!(any(target_os = "macos", target_os = "ios")) {
        &[B::Metal]
    } else if cfg!(windows) {
        &[B::Dx12, B::Vulkan]
    } else {
        &[B::Vulkan]
    }
}

/// An opened wgpu device: the device, the adapter's name, and whether it is a real GPU (not a
/// software rasterizer such as Mesa's lavapipe).
pub type Opened = (Device, String, bool);

/// Opens the first adapter of a compute API ([`compute_apis`]), or says why there is none. The
/// device is opened once per process and shared: later calls (other threads included) get the
/// same device or the same error.
#[cfg(feature = "wgpu")]
pub fn open_wgpu() -> Result<Opened, String> {
    use std::sync::Mutex;
    static OPENED: Mutex<Option<Result<Opened, String>>> = Mutex::new(None);
    let mut slot = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(open_compute_adapter).clone()
}

#[cfg(feature = "wgpu")]
fn open_compute_adapter() -> Result<Opened, String> {
    let mut why = Vec::new();
    for &api in compute_apis() {
        // A driver that panics while opening is a missing adapter, not a crash.
        let opened = std::panic::catch_unwind(|| {
            Device::wgpu_options()
                .graphics_api(api)
                .init()
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|p| Err(crate::util::panic_text(&p)));
        match opened {
            Ok(device) => {
                let (name, physical) = match device.identity() {
                    Some(id) => (id.name, id.physical.is_some()),
                    None => ("unnamed adapter (no identity)".to_string(), false),
                };
                if let Some(refused) = spirv_refusal(api, physical, &name) {
                    why.push(format!("{api:?}: {refused}"));
                    continue;
                }
                return Ok((
                    device,
                    format!("{name}, {api:?}{}", compiler(api)),
                    physical,
                ));
            }
            Err(e) => why.push(format!("{api:?}: {e}")),
        }
    }
    Err(format!(
        "no GPU adapter on a compute API (tried {}; OpenGL is never used)",
        why.join("; ")
    ))
}

/// Whether this build compiles kernels to SPIR-V on Vulkan adapters (the `vulkan` feature:
/// burn's `vulkan`, cubecl's SPIR-V compiler, with cooperative-matrix matmul and the half
/// types the driver reports) rather than WGSL.
pub const SPIRV: bool = cfg!(feature = "vulkan");

/// How the adapter's kernels are compiled, for its description.
#[cfg(feature = "wgpu")]
fn compiler(api: burn::tensor::wgpu::WgpuBackend) -> &'static str {
    match api {
        burn::tensor::wgpu::WgpuBackend::Vulkan if SPIRV => " (SPIR-V build)",
        _ => "",
    }
}

/// Why a SPIR-V build does not open this adapter, if it does not: Mesa's lavapipe (22.3.6 and
/// 25.0.7 tried) crashes the process with SIGSEGV inside `vkCreateComputePipelines` on cubecl's
/// SPIR-V kernels, so a software Vulkan adapter is refused here, with the way out, instead.
#[cfg(feature = "wgpu")]
fn spirv_refusal(
    api: burn::tensor::wgpu::WgpuBackend,
    physical: bool,
    name: &str,
) -> Option<String> {
    let vulkan = api == burn::tensor::wgpu::WgpuBackend::Vulkan;
    (SPIRV && vulkan && !physical).then(|| {
        format!(
            "{name} is a software adapter, and this dfm compiles kernels to SPIR-V (the `vulkan` feature), which Mesa's lavapipe crashes on; build without `--features vulkan` to run on it (WGSL)"
        )
    })
}

#[cfg(not(feature = "wgpu"))]
pub fn open_wgpu() -> Result<Opened, String> {
    Err("this dfm was built without the `wgpu` feature".into())
}

#[cfg(feature = "cuda")]
fn open_cuda(index: usize) -> Result<Device, String> {
    use burn::tensor::DeviceType;
    let n = Device::enumerate(DeviceType::Cuda).into_vec().len();
    if index >= n {
        return Err(format!("no CUDA device {index} ({n} found)"));
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_index: usize) -> Result<Device, String> {
    Err(
        "this dfm was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    )
}

/// Resolves a device choice (`index` selects among several GPUs).
pub fn select(choice: DeviceChoice, index: usize) -> anyhow::Result<Selected> {
    match choice {
        DeviceChoice::Flex => Ok(Selected {
            device: Device::flex(),
            description: "flex (CPU)".into(),
        }),
        DeviceChoice::Cuda => {
            let device = open_cuda(index).map_err(|e| anyhow::anyhow!("--device cuda: {e}"))?;
            Ok(Selected {
                device,
                description: format!("cuda:{index}"),
            })
        }
        DeviceChoice::Wgpu => {
            let (device, name, _) =
                open_wgpu().map_err(|e| anyhow::anyhow!("--device wgpu: {e}"))?;
            Ok(Selected {
                device,
                description: format!("wgpu ({name})"),
            })
        }
        DeviceChoice::Auto => {
            if let Ok(device) = open_cuda(index) {
                return Ok(Selected {
                    device,
                    description: format!("cuda:{index} (auto)"),
                });
            }
            match open_wgpu() {
                Ok((device, name, true)) => Ok(Selected {
                    device,
                    description: format!("wgpu ({name}) (auto)"),
                }),
                Ok((_, name, false)) => Ok(Selected {
                    device: Device::flex(),
                    description: format!(
                        "flex (CPU) (auto: the only wgpu adapter, {name}, is not a GPU)"
                    ),
                }),
                Err(e) => Ok(Selected {
                    device: Device::flex(),
                    description: format!("flex (CPU) (auto: no GPU adapter: {e})"),
                }),
            }
        }
    }
}

/// The device of a command, by one rule for every command: the `--device` flag when given,
/// else the config's `run.device` when the command has a config, else `auto` (a real GPU when
/// there is one, flex otherwise).
pub fn choose(flag: Option<&str>, config: Option<DeviceChoice>) -> anyhow::Result<Selected> {
    let (choice, index) = match flag {
        Some(f) => parse(f)?,
        None => (config.unwrap_or(DeviceChoice::Auto), 0),
    };
    select(choice, index)
}

/// Parses `flex`, `wgpu`, `cuda`, `cuda:1` into a choice and an index.
pub fn parse(s: &str) -> anyhow::Result<(DeviceChoice, usize)> {
    let (name, idx) = s.split_once(':').unwrap_or((s, "0"));
    let choice: DeviceChoice = name.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let index = idx
        .parse()
        .map_err(|_| anyhow::anyhow!("bad device index in `{s}`"))?;
    Ok((choice, index))
}
