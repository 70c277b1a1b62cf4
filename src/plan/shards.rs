//! Shard shapes of sharded (OME-NGFF 0.5) output, per level. Pure: no I/O.
//!
//! - `auto`: per level, shard = chunk × a power of two per space axis, the largest that
//!   holds at most the shard size of uncompressed data; a space axis grows only while the
//!   shard does not yet cover the level, and the smallest extent grows first. So small
//!   levels get small shards and the top level one shard.
//! - An explicit shape must be a multiple of the (level-0) chunk shape on every axis; each
//!   level keeps the same number of chunks per shard, clipped to the level.
//!
//! A shard is always a whole number of its level's chunks, and never more of them along an
//! axis than the level has.

use serde::{Deserialize, Serialize};

use super::{Axis, PlanError, PyramidPlan};

/// How output arrays are sharded (`--shards`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardChoice {
    /// Per level, the largest power-of-two multiple of the chunk within the shard size.
    #[default]
    Auto,
    /// No sharding: one file per chunk.
    None,
    /// The same shard shape at every level (clipped to the level), a multiple of the chunk
    /// shape.
    Shape(Vec<u64>),
}

impl std::str::FromStr for ShardChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ShardChoice::Auto),
            "none" => Ok(ShardChoice::None),
            shape => shape
                .split(',')
                .map(|v| match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!(
                        "`{v}` is not a positive integer (expected auto, none, or a shape such as 128,1024,1024)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ShardChoice::Shape),
        }
    }
}

/// The shard shape of every level (`None` everywhere for [`ShardChoice::None`]).
///
/// # Errors
/// [`PlanError::InvalidShards`] for an explicit shape of the wrong length or one that is
/// not a multiple of the chunk shape, naming the axis and the nearest valid values.
pub fn shard_shapes(
    plan: &PyramidPlan,
    axes: &[Axis],
    choice: &ShardChoice,
    element_size: u64,
    shard_size: u64,
) -> Result<Vec<Option<Vec<u64>>>, PlanError> {
    let chunks = &plan.levels[0].chunks;
    let multipliers: Option<Vec<u64>> = match choice {
        ShardChoice::None => return Ok(vec![None; plan.len()]),
        ShardChoice::Auto => None,
        ShardChoice::Shape(shape) => Some(explicit_multipliers(shape, chunks, axes)?),
    };
    Ok(plan
        .levels
        .iter()
        .map(|level| {
            let m = match &multipliers {
                Some(m) => m.clone(),
                None => auto_multipliers(&level.shape, &level.chunks, axes, element_size, shard_size),
            };
            Some(
                level
                    .shape
                    .iter()
                    .zip(&level.chunks)
                    .zip(&m)
                    .map(|((&n, &c), &m)| c * m.min(n.div_ceil(c)))
                    .collect(),
            )
        })
        .collect())
}

/// Chunks per shard along each axis for an explicit shard shape.
fn explicit_multipliers(shape: &[u64], chunks: &[u64], axes: &[Axis]) -> Result<Vec<u64>, PlanError> {
    if shape.len() != chunks.len() {
        return Err(PlanError::InvalidShards(format!(
            "{} values given but the array has {} dimensions",
            shape.len(),
            chunks.len()
        )));
    }
    shape
        .iter()
        .zip(chunks)
        .zip(axes)
        .map(|((&s, &c), axis)| {
            if s % c == 0 {
                Ok(s / c)
            } else {
                let below = (s / c) * c;
                let nearest = if below == 0 {
                    format!("{c}")
                } else {
                    format!("{below} or {}", below + c)
                };
                Err(PlanError::InvalidShards(format!(
                    "on axis `{}` the shard size {s} is not a multiple of the chunk size {c} (nearest valid: {nearest})",
                    axis.name
                )))
            }
        })
        .collect()
}

/// Chunks per shard along each axis by the `auto` rule for a level of `shape` and `chunks`.
fn auto_multipliers(shape: &[u64], chunks: &[u64], axes: &[Axis], element_size: u64, shard_size: u64) -> Vec<u64> {
    let mut m = vec![1u64; shape.len()];
    let bytes = |m: &[u64]| -> u64 {
        chunks
            .iter()
            .zip(m)
            .fold(element_size, |b, (&c, &m)| b.saturating_mul(c * m))
    };
    loop {
        // The space axis with the smallest shard extent that does not yet cover the level;
        // on a tie the last axis (x before y before z).
        let grow = (0..shape.len())
            .filter(|&a| axes[a].is_space() && chunks[a] * m[a] < shape[a])
            .min_by_key(|&a| (chunks[a] * m[a], std::cmp::Reverse(a)));
        let Some(axis) = grow else { break };
        if bytes(&m).saturating_mul(2) > shard_size {
            break;
        }
        m[axis] *= 2;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FactorRule, PlanRequest, default_axes, plan_pyramid};

    fn plan(shape: &[u64], chunks: &[u64]) -> PyramidPlan {
        plan_pyramid(&PlanRequest {
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            axes: default_axes(shape.len()).unwrap(),
            pixel_size: vec![1.0; shape.len()],
            factors: FactorRule::Auto,
            levels: None,
        })
        .unwrap()
    }

    #[test]
    fn auto_shards_fill_the_size_and_shrink_with_the_levels() {
        let p = plan(&[1024, 4096, 4096], &[64, 256, 256]);
        let axes = default_axes(3).unwrap();
        let shards = shard_shapes(&p, &axes, &ShardChoice::Auto, 2, 1 << 30).unwrap();
        // 8 MiB chunks: 128 of them make 1 GiB, the smallest extent grown first.
        assert_eq!(shards[0], Some(vec![512, 1024, 1024]));
        let bytes = |s: &[u64]| s.iter().product::<u64>() * 2;
        assert_eq!(bytes(shards[0].as_ref().unwrap()), 1 << 30);
        // The top level is one shard that is a whole number of chunks.
        let top = p.levels.last().unwrap();
        let top_shard = shards.last().unwrap().as_ref().unwrap();
        for ((&n, &c), &s) in top.shape.iter().zip(&top.chunks).zip(top_shard) {
            assert_eq!(s % c, 0);
            assert!(s >= n && s < n + c);
        }
        for (level, shard) in p.levels.iter().zip(&shards) {
            let shard = shard.as_ref().unwrap();
            assert!(bytes(shard) <= 1 << 30, "{shard:?}");
            assert!(shard.iter().zip(&level.chunks).all(|(&s, &c)| s % c == 0));
        }
    }

    #[test]
    fn explicit_shards_must_be_chunk_multiples() {
        let p = plan(&[256, 1024, 1024], &[64, 256, 256]);
        let axes = default_axes(3).unwrap();
        let shards = shard_shapes(&p, &axes, &ShardChoice::Shape(vec![128, 512, 512]), 2, 1 << 30).unwrap();
        assert_eq!(shards[0], Some(vec![128, 512, 512]));
        // Level 2 is 64×256×256: one chunk, so one chunk per shard.
        assert_eq!(shards[2], Some(vec![64, 256, 256]));
        let err = shard_shapes(&p, &axes, &ShardChoice::Shape(vec![128, 600, 512]), 2, 1 << 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid shards: on axis `y` the shard size 600 is not a multiple of the chunk size 256 (nearest valid: 512 or 768)"
        );
        assert!(shard_shapes(&p, &axes, &ShardChoice::Shape(vec![128, 512]), 2, 1 << 30).is_err());
        assert_eq!(
            shard_shapes(&p, &axes, &ShardChoice::None, 2, 1 << 30).unwrap(),
            vec![None; 3]
        );
    }

    #[test]
    fn shard_choices_parse() {
        assert_eq!("auto".parse::<ShardChoice>().unwrap(), ShardChoice::Auto);
        assert_eq!("none".parse::<ShardChoice>().unwrap(), ShardChoice::None);
        assert_eq!(
            "1,512,512".parse::<ShardChoice>().unwrap(),
            ShardChoice::Shape(vec![1, 512, 512])
        );
        assert!("0,2".parse::<ShardChoice>().is_err());
    }
}
