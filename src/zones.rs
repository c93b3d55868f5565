//! Delivery zones as stop features: what drivers do on real routes is finish their zone, then
//! move to a neighbouring one. Three per-stop values, each in [0, 1]:
//! - `rule_rank`: the stop's rank under "same zone, then neighbouring zone, then nearest" (0 =
//!   the rule's pick; a neighbouring zone's id is one row or column away, below; where zone ids
//!   do not follow that convention, as in the simulator, this is "same zone, then nearest");
//! - `zone_rank`: its zone's rank among the listed zones by the distance of the zone's nearest
//!   stop (0 = the vehicle's own zone when it has stops, else the nearest zone);
//! - `zone_step`: how far the stop's zone id is from the vehicle's in the zone-id convention of
//!   the Amazon routing data (`D-8.2B`: area `D-8`, row `2`, column `B`; neighbouring zones
//!   differ by one row or column), with a presence flag: 0 = same zone, 1 = another area or four
//!   or more steps away.

use std::collections::BTreeMap;

/// Parts of a zone id `AREA.ROWCOL` (`D-8.2B` -> (`D-8`, 2, 'B')).
fn parse(z: &str) -> Option<(&str, i64, char)> {
    let (area, rest) = z.split_once('.')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let col = rest[digits.len()..].chars().next()?;
    Some((area, digits.parse().ok()?, col.to_ascii_uppercase()))
}

/// Steps between two zone ids (row and column differences), capped at 4; None when either id
/// does not follow the convention.
pub fn zone_step(a: &str, b: &str) -> Option<f32> {
    let (pa, ra, ca) = parse(a)?;
    let (pb, rb, cb) = parse(b)?;
    if pa != pb {
        return Some(4.0);
    }
    let steps = (ra - rb).unsigned_abs() + (ca as i64 - cb as i64).unsigned_abs();
    Some(steps.min(4) as f32)
}

/// Whether a zone id follows the convention (`D-8.2B`).
pub fn follows_convention(z: &str) -> bool {
    parse(z).is_some()
}

/// Whether two zone ids are neighbours in the convention (one row or column apart).
pub fn neighbours(a: &str, b: &str) -> bool {
    zone_step(a, b) == Some(1.0)
}

/// The key of "same zone, then neighbouring zone, then nearest" for a stop at `d` metres in zone
/// `z`, for a vehicle in `here` (lower = sooner).
pub fn rule_key(d: f64, z: Option<&str>, here: Option<&str>) -> f64 {
    match (here, z) {
        (None, _) => d,
        (Some(h), Some(z)) if z == h => d,
        (Some(h), Some(z)) if neighbours(h, z) => d + 1e12,
        _ => d + 2e12,
    }
}

/// Ranks of 0..n under a key (ties by index), scaled to [0, 1].
fn ranks(keys: &[f64]) -> Vec<f32> {
    let n = keys.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    let mut r = vec![0f32; n];
    let denom = n.saturating_sub(1).max(1) as f32;
    for (pos, &i) in order.iter().enumerate() {
        r[i] = pos as f32 / denom;
    }
    r
}

pub struct ZoneFeatures {
    pub rule_rank: Vec<f32>,
    pub zone_rank: Vec<f32>,
    /// (scaled step, present)
    pub zone_step: Vec<(f32, f32)>,
}

/// The zone features of listed stops at distances `dist` with zones `zones`, for a vehicle in
/// `here` (its current zone, when known).
pub fn zone_features(dist: &[f64], zones: &[Option<&str>], here: Option<&str>) -> ZoneFeatures {
    let rule: Vec<f64> = dist
        .iter()
        .zip(zones)
        .map(|(d, z)| rule_key(*d, *z, here))
        .collect();
    // A zone's distance: its nearest stop's; the vehicle's own zone comes first.
    let mut zone_dist: BTreeMap<&str, f64> = BTreeMap::new();
    for (d, z) in dist.iter().zip(zones) {
        if let Some(z) = z {
            let e = zone_dist.entry(z).or_insert(f64::INFINITY);
            *e = e.min(if Some(*z) == here { -1.0 } else { *d });
        }
    }
    let zone_key: Vec<f64> = dist
        .iter()
        .zip(zones)
        .map(|(d, z)| z.and_then(|z| zone_dist.get(z).copied()).unwrap_or(*d))
        .collect();
    // Rank the zones, not the stops: stops of one zone share a rank.
    let mut distinct: Vec<f64> = zone_key.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let denom = distinct.len().saturating_sub(1).max(1) as f32;
    let zone_rank = zone_key
        .iter()
        .map(|k| distinct.partition_point(|x| x < k) as f32 / denom)
        .collect();
    let zone_step = zones
        .iter()
        .map(|z| match (here, z) {
            (Some(h), Some(z)) => zone_step(h, z).map_or((0.0, 0.0), |s| (s / 4.0, 1.0)),
            _ => (0.0, 0.0),
        })
        .collect();
    ZoneFeatures {
        rule_rank: ranks(&rule),
        zone_rank,
        zone_step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_rules_and_ranks() {
        assert_eq!(zone_step("D-8.2B", "D-8.2B"), Some(0.0));
        assert_eq!(zone_step("D-8.2B", "D-8.1B"), Some(1.0));
        assert_eq!(zone_step("D-8.2B", "D-8.3C"), Some(2.0));
        assert_eq!(zone_step("D-8.2B", "G-4.2B"), Some(4.0));
        assert_eq!(zone_step("D-8.2B", "north"), None);
        // Stops: 0 (zone A, 50 m), 1 (own zone, 300 m), 2 (own zone, 100 m), 3 (none, 10 m).
        let f = zone_features(
            &[50.0, 300.0, 100.0, 10.0],
            &[Some("D-8.1A"), Some("D-8.2B"), Some("D-8.2B"), None],
            Some("D-8.2B"),
        );
        // The rule: own zone nearest first (2, then 1), then the others by distance (3, 0).
        assert_eq!(f.rule_rank, vec![1.0, 1.0 / 3.0, 0.0, 2.0 / 3.0]);
        // Zones: own (rank 0), the zoneless stop at 10 m (1), zone A at 50 m (2).
        assert_eq!(f.zone_rank, vec![1.0, 0.0, 0.0, 0.5]);
        assert_eq!(f.zone_step[0], (0.5, 1.0));
        assert_eq!(f.zone_step[3], (0.0, 0.0));
        // A neighbouring zone (one column on) comes before a nearer zone two steps away.
        let f = zone_features(
            &[50.0, 300.0, 100.0],
            &[Some("D-8.1A"), Some("D-8.2C"), Some("D-8.2B")],
            Some("D-8.2B"),
        );
        assert_eq!(f.rule_rank, vec![1.0, 0.5, 0.0]);
        assert!(neighbours("D-8.2B", "D-8.2C") && !neighbours("D-8.2B", "D-8.1A"));
    }
}
