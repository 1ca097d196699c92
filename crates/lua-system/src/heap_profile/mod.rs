//! Heap profiles of a Lua state and the files they are written to: pprof (gzipped protobuf, as
//! Go's heap profiles, for `go tool pprof`), folded stacks (for flamegraph tools) and a
//! flamegraph SVG.
//!
//! A [`HeapProfile`] holds raw sampled counts; every writer scales them as Go does for a sampled
//! heap profile ([`HeapProfile::scaled`]), so the figures estimate the whole heap.
//!
//! ```
//! use lua_system::heap_profile::{Frame, HeapProfile, Sample, View};
//!
//! let frame = |function: &str, line| Frame { function: function.into(), file: "app.lua".into(), line };
//! let profile = HeapProfile {
//!     rate: 1, // every allocation sampled: no scaling
//!     samples: vec![Sample {
//!         stack: vec![frame("build", 7), frame("main chunk", 20)], // innermost first
//!         object_type: "table",
//!         alloc_objects: 3,
//!         alloc_bytes: 168,
//!         inuse_objects: 2,
//!         inuse_bytes: 112,
//!         labels: vec![],
//!     }],
//!     time_nanos: 0,
//!     duration_nanos: 0,
//!     comments: vec![],
//! };
//! let mut folded = Vec::new();
//! profile.write_folded(View::InuseSpace, &mut folded)?;
//! assert_eq!(folded, b"main chunk (app.lua:20);build (app.lua:7) 112\n");
//! assert_eq!(profile.total(View::AllocObjects), 3);
//! # Ok::<(), std::io::Error>(())
//! ```

mod flamegraph;
mod folded;
mod pprof;

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One frame of a Lua call stack at an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The function as Lua's traceback names it: `"alpha"`, `"string.rep"`, `"main chunk"`,
    /// `"function <file.lua:12>"`.
    pub function: String,
    /// The chunk's short source (`"file.lua"`), or `"[C]"` for a C function.
    pub file: String,
    /// The line the function was running, 0 if unknown (C functions).
    pub line: i64,
}

/// Allocations sampled at one call stack and object type. The counts are raw: those of the
/// sampled allocations only, not scaled to estimate the heap ([`HeapProfile::scaled`] does).
#[derive(Clone, Debug)]
pub struct Sample {
    /// The call stack, innermost frame first.
    pub stack: Vec<Frame>,
    /// The Lua type of the allocated objects: `"table"`, `"string"`, `"function"`, `"userdata"`,
    /// `"thread"`, `"proto"`, `"other"`...
    pub object_type: &'static str,
    /// Sampled allocations since profiling started, freed or not.
    pub alloc_objects: u64,
    /// Bytes of the sampled allocations since profiling started, freed or not.
    pub alloc_bytes: u64,
    /// Sampled allocations not yet freed.
    pub inuse_objects: u64,
    /// Bytes of the sampled allocations not yet freed.
    pub inuse_bytes: u64,
    /// Labels that tell the sample's origin apart in a profile of several states (pprof's
    /// string labels, for `go tool pprof -tagfocus state=worker-1`), e.g. `[("state",
    /// "worker-1")]`; beside the `object` and `bytes` labels every sample has.
    pub labels: Vec<(String, String)>,
}

/// A heap profile: the sampled allocations of a state, by call stack and object type.
#[derive(Clone, Debug)]
pub struct HeapProfile {
    /// The sampling rate: mean bytes allocated between two samples; 1 (or 0) when every
    /// allocation was recorded. Go's `runtime.MemProfileRate`.
    pub rate: u64,
    /// The samples, in no particular order; several may share a stack.
    pub samples: Vec<Sample>,
    /// When the profile was taken, in nanoseconds since the Unix epoch.
    pub time_nanos: i64,
    /// How long profiling had run when the profile was taken, in nanoseconds.
    pub duration_nanos: i64,
    /// Free-form lines about the profile (pprof's `comment`, shown by `go tool pprof
    /// -comments`): the profiler's own memory, the Lua version.
    pub comments: Vec<String>,
}

/// Which figure of a profile a folded or flamegraph output shows; the names are those of Go's
/// heap profile sample types ([`View::name`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Bytes allocated and not yet freed (`inuse_space`).
    #[default]
    InuseSpace,
    /// Objects allocated and not yet freed (`inuse_objects`).
    InuseObjects,
    /// Bytes allocated since profiling started, freed or not (`alloc_space`).
    AllocSpace,
    /// Objects allocated since profiling started, freed or not (`alloc_objects`).
    AllocObjects,
}

impl View {
    /// Every view, in the order of the pprof sample types.
    pub const ALL: [View; 4] = [View::AllocObjects, View::AllocSpace, View::InuseObjects, View::InuseSpace];

    /// Go's name of the figure (the pprof sample type): `"inuse_space"`, `"inuse_objects"`,
    /// `"alloc_space"` or `"alloc_objects"`.
    pub fn name(self) -> &'static str {
        match self {
            View::InuseSpace => "inuse_space",
            View::InuseObjects => "inuse_objects",
            View::AllocSpace => "alloc_space",
            View::AllocObjects => "alloc_objects",
        }
    }

    /// The view Go calls `name` ([`View::name`]), if any.
    pub fn from_name(name: &str) -> Option<View> {
        View::ALL.into_iter().find(|view| view.name() == name)
    }

    /// What the figure counts: `"bytes"` or `"objects"`.
    pub fn unit(self) -> &'static str {
        match self {
            View::InuseSpace | View::AllocSpace => "bytes",
            View::InuseObjects | View::AllocObjects => "objects",
        }
    }
}

/// A sample's figures scaled to estimate the whole heap ([`HeapProfile::scaled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaledValues {
    /// Estimated allocations since profiling started.
    pub alloc_objects: i64,
    /// Estimated bytes allocated since profiling started.
    pub alloc_bytes: i64,
    /// Estimated allocations not yet freed.
    pub inuse_objects: i64,
    /// Estimated bytes not yet freed.
    pub inuse_bytes: i64,
}

impl ScaledValues {
    /// The figure a view shows.
    pub fn get(&self, view: View) -> i64 {
        match view {
            View::InuseSpace => self.inuse_bytes,
            View::InuseObjects => self.inuse_objects,
            View::AllocSpace => self.alloc_bytes,
            View::AllocObjects => self.alloc_objects,
        }
    }
}

impl HeapProfile {
    /// A sample's figures scaled to estimate the whole heap, as Go scales a sampled heap profile
    /// (`scaleHeapSample` in runtime/pprof/protomem.go): an allocation of `s` bytes is sampled
    /// with probability `1 - exp(-s/rate)`, so each pair (objects, bytes) is divided by that
    /// probability for the pair's mean object size, and truncated to an integer. Unscaled when
    /// `rate <= 1` (everything recorded); (0, 0) when either figure of the pair is 0.
    pub fn scaled(&self, sample: &Sample) -> ScaledValues {
        let (alloc_objects, alloc_bytes) = scale(sample.alloc_objects, sample.alloc_bytes, self.rate);
        let (inuse_objects, inuse_bytes) = scale(sample.inuse_objects, sample.inuse_bytes, self.rate);
        ScaledValues { alloc_objects, alloc_bytes, inuse_objects, inuse_bytes }
    }

    /// The sum of a view's scaled figures over all samples: the estimated heap total.
    pub fn total(&self, view: View) -> i64 {
        self.samples.iter().map(|sample| self.scaled(sample).get(view)).sum()
    }

    /// Writes the profile as Go writes a heap profile: a gzipped protobuf
    /// `perftools.profiles.Profile`, read by `go tool pprof` (`inuse_space` shown by default):
    /// the four figures scaled, each sample labelled `object` (its object type) and `bytes`
    /// (the mean size of its sampled objects), one location per distinct frame.
    pub fn write_pprof(&self, out: impl Write) -> io::Result<()> {
        pprof::write(self, out)
    }

    /// Writes a view as folded stacks, one line per distinct stack (frames outermost first,
    /// joined by `;`, then a space and the scaled figure), sorted; stacks whose figure is 0
    /// are left out.
    pub fn write_folded(&self, view: View, out: impl Write) -> io::Result<()> {
        folded::write(self, view, out)
    }

    /// Draws a view as a flamegraph SVG. Fails with [`io::ErrorKind::InvalidData`], writing
    /// nothing, when the view has nothing to draw (every figure 0).
    pub fn write_svg(&self, view: View, out: impl Write) -> io::Result<()> {
        flamegraph::write(self, view, out)
    }

    /// Writes the profile to a file whose format its name tells: `.pb.gz` or `.pprof` for pprof,
    /// `.folded` for folded stacks and `.svg` for a flamegraph (both of [`View::InuseSpace`]).
    /// Any other name fails with [`io::ErrorKind::InvalidInput`], creating nothing. The profile
    /// is written to a temporary file beside `path`, then renamed: a reader never sees half of
    /// it.
    pub fn write_to_path(&self, path: &Path) -> io::Result<()> {
        let format = Format::of(path)?;
        let temp = temp_path(path);
        let written = self.write_file(format, &temp).and_then(|()| fs::rename(&temp, path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Writes a new file, flushed to the disk.
    fn write_file(&self, format: Format, path: &Path) -> io::Result<()> {
        let mut out = BufWriter::new(OpenOptions::new().write(true).create_new(true).open(path)?);
        match format {
            Format::Pprof => self.write_pprof(&mut out)?,
            Format::Folded => self.write_folded(View::InuseSpace, &mut out)?,
            Format::Svg => self.write_svg(View::InuseSpace, &mut out)?,
        }
        out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
    }
}

/// Go's `scaleHeapSample` for one (objects, bytes) pair.
fn scale(count: u64, size: u64, rate: u64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (saturate(count), saturate(size));
    }
    let average = size as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-average / rate as f64).exp());
    // `as` truncates toward zero, as Go's int64(float64) does.
    ((count as f64 * scale) as i64, (size as f64 * scale) as i64)
}

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The file formats `write_to_path` writes.
enum Format {
    Pprof,
    Folded,
    Svg,
}

impl Format {
    fn of(path: &Path) -> io::Result<Format> {
        let name = path.file_name().map(|name| name.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".pb.gz") || name.ends_with(".pprof") {
            Ok(Format::Pprof)
        } else if name.ends_with(".folded") {
            Ok(Format::Folded)
        } else if name.ends_with(".svg") {
            Ok(Format::Svg)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot tell the heap profile format of '{}': the file name must end in \
                     .pb.gz or .pprof (pprof), .folded (folded stacks) or .svg (flamegraph)",
                    path.display()
                ),
            ))
        }
    }
}

/// A name beside `path`, unique to this process and call, for the file before its rename.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{unique}.tmp", std::process::id()))
}

/// A frame as folded stacks and flamegraphs show it: `function (file:line)`, with no `;` (the
/// frame separator) nor line break.
fn frame_text(frame: &Frame) -> String {
    let text = if frame.line > 0 {
        format!("{} ({}:{})", frame.function, frame.file, frame.line)
    } else {
        format!("{} ({})", frame.function, frame.file)
    };
    text.replace(';', ",").replace(['\n', '\r'], " ")
}
