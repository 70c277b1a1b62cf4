//! The index of an array task, as the schedulers that run them say it: what `ome-pyramid
//! part OUTPUT` runs when no index is given.

/// The variables looked at, in order, with the index of their first task.
pub const INDEX_VARIABLES: &[(&str, u64)] = &[
    ("SLURM_ARRAY_TASK_ID", 0),
    ("JOB_COMPLETION_INDEX", 0),
    ("AWS_BATCH_JOB_ARRAY_INDEX", 0),
    ("BATCH_TASK_INDEX", 0),
    ("LSB_JOBINDEX", 1),
    ("SGE_TASK_ID", 1),
    ("PBS_ARRAY_INDEX", 0),
];

/// Where a task index was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIndex {
    /// The 0-based index.
    pub index: u64,
    /// The variable it came from.
    pub variable: &'static str,
}

/// Why no task index could be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskIndexError {
    /// None of the variables is set.
    #[error(
        "no part index given and none found in the environment (looked for {}); pass INDEX, or run as an array task",
        INDEX_VARIABLES.iter().map(|(v, _)| *v).collect::<Vec<_>>().join(", ")
    )]
    NotFound,
    /// A variable holds something that is not an index of its scheduler.
    #[error("{variable}={value} is not a task index{}", if *first == 1 { " (counted from 1)" } else { "" })]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The scheduler's first index.
        first: u64,
    },
}

/// The 0-based index of this array task, from the first scheduler variable set in `env`
/// (`std::env::var` in a real run): SLURM's task id minus `SLURM_ARRAY_TASK_MIN` (an array
/// may start anywhere), LSF's and SGE's minus 1 (they count from 1), the others as they are.
///
/// # Errors
/// [`TaskIndexError`] when none is set or the one set is not an index.
pub fn task_index(env: impl Fn(&str) -> Option<String>) -> Result<TaskIndex, TaskIndexError> {
    let set = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    for &(variable, first) in INDEX_VARIABLES {
        let Some(value) = set(variable) else {
            continue;
        };
        // SGE sets "undefined" outside array jobs: not an array task, look further.
        if variable == "SGE_TASK_ID" && value == "undefined" {
            continue;
        }
        let invalid = || TaskIndexError::Invalid {
            variable,
            value: value.clone(),
            first,
        };
        let raw: u64 = value.parse().map_err(|_| invalid())?;
        let base = if variable == "SLURM_ARRAY_TASK_ID" {
            match set("SLURM_ARRAY_TASK_MIN") {
                Some(min) => min.parse().map_err(|_| TaskIndexError::Invalid {
                    variable: "SLURM_ARRAY_TASK_MIN",
                    value: min,
                    first: 0,
                })?,
                None => 0,
            }
        } else {
            first
        };
        let index = raw.checked_sub(base).ok_or_else(invalid)?;
        return Ok(TaskIndex { index, variable });
    }
    Err(TaskIndexError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn each_scheduler_gives_a_zero_based_index() {
        // The variables set, the index expected, and the variable it comes from.
        type Case<'a> = (&'a [(&'a str, &'a str)], u64, &'a str);
        let cases: &[Case] = &[
            (&[("SLURM_ARRAY_TASK_ID", "7")], 7, "SLURM_ARRAY_TASK_ID"),
            (
                &[("SLURM_ARRAY_TASK_ID", "12"), ("SLURM_ARRAY_TASK_MIN", "10")],
                2,
                "SLURM_ARRAY_TASK_ID",
            ),
            (&[("JOB_COMPLETION_INDEX", "3")], 3, "JOB_COMPLETION_INDEX"),
            (&[("AWS_BATCH_JOB_ARRAY_INDEX", "0")], 0, "AWS_BATCH_JOB_ARRAY_INDEX"),
            (&[("BATCH_TASK_INDEX", "5")], 5, "BATCH_TASK_INDEX"),
            (&[("LSB_JOBINDEX", "1")], 0, "LSB_JOBINDEX"),
            (&[("SGE_TASK_ID", "4")], 3, "SGE_TASK_ID"),
            (
                &[("SGE_TASK_ID", "undefined"), ("PBS_ARRAY_INDEX", "6")],
                6,
                "PBS_ARRAY_INDEX",
            ),
        ];
        for (vars, index, variable) in cases {
            assert_eq!(
                task_index(env(vars)),
                Ok(TaskIndex {
                    index: *index,
                    variable
                }),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn a_missing_or_bad_index_is_explained() {
        let err = task_index(env(&[])).unwrap_err();
        assert_eq!(err, TaskIndexError::NotFound);
        let text = err.to_string();
        for (variable, _) in INDEX_VARIABLES {
            assert!(text.contains(variable), "{text}");
        }
        let err = task_index(env(&[("LSB_JOBINDEX", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("LSB_JOBINDEX=0") && err.to_string().contains("from 1"),
            "{err}"
        );
        let err = task_index(env(&[("JOB_COMPLETION_INDEX", "x")])).unwrap_err();
        assert!(matches!(err, TaskIndexError::Invalid { .. }), "{err}");
    }
}
