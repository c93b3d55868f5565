//! The model's input modalities, in token order. One list, used by the config (which modalities a
//! run may drop), the model (modality embeddings, keep masks) and evaluation (ablations).

/// The modalities' names, in the order of the model's keep mask.
pub const MODALITIES: [&str; 6] = ["history", "imu", "image", "stops", "context", "video"];

/// A modality; its index is its place in [`MODALITIES`] and in the model's keep mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Modality {
    History = 0,
    Imu = 1,
    Image = 2,
    Stops = 3,
    Context = 4,
    /// Dashcam clips; a model has it only when its dataset has clips.
    Video = 5,
}

impl Modality {
    pub const ALL: [Modality; 6] = [
        Modality::History,
        Modality::Imu,
        Modality::Image,
        Modality::Stops,
        Modality::Context,
        Modality::Video,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        MODALITIES[self.index()]
    }

    /// The modality of a name (`history`, `imu`, `image`, `stops`, `context`, `video`).
    pub fn from_name(name: &str) -> Option<Modality> {
        Modality::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_agree() {
        for (i, m) in Modality::ALL.into_iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(Modality::from_name(m.name()), Some(m));
        }
        assert_eq!(Modality::from_name("video"), Some(Modality::Video));
        assert_eq!(Modality::from_name("audio"), None);
    }
}
