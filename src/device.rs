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

/// Opens the wgpu default adapter, or says why not.
#[cfg(feature = "wgpu")]
pub fn open_wgpu() -> Result<(Device, String, bool), String> {
    use burn::tensor::DeviceKind;
    let device = match Device::wgpu_options().init() {
        Ok(d) => d,
        // Already opened in this process: reuse it.
        Err(e) if e.to_string().contains("already") => Device::wgpu(DeviceKind::DefaultDevice),
        Err(e) => return Err(e.to_string()),
    };
    let (name, physical) = match device.identity() {
        Some(id) => (id.name, id.physical.is_some()),
        None => ("unknown adapter".to_string(), false),
    };
    Ok((device, name, physical))
}

#[cfg(not(feature = "wgpu"))]
pub fn open_wgpu() -> Result<(Device, String, bool), String> {
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
            let (device, name, _) = open_wgpu()
                .map_err(|e| anyhow::anyhow!("--device wgpu: no usable adapter: {e}"))?;
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

/// Parses `flex`, `wgpu`, `cuda`, `cuda:1` into a choice and an index.
pub fn parse(s: &str) -> anyhow::Result<(DeviceChoice, usize)> {
    let (name, idx) = s.split_once(':').unwrap_or((s, "0"));
    let choice: DeviceChoice = name.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let index = idx
        .parse()
        .map_err(|_| anyhow::anyhow!("bad device index in `{s}`"))?;
    Ok((choice, index))
}
