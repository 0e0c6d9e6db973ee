//! The Python binding: every conversion between Python and the engine, and nothing else.
//!
//! Inputs are copied into Rust-owned values, then every bitmap walk runs with the GIL released
//! (`Python::detach`). Engine errors become Python exceptions here and only here.

use crate::error::Error;
use crate::eval::{self, Step};
use crate::expr::{self, AudienceSpec};
use crate::load::{self, Arrays};
use crate::registry::{Platform, Registry, Vendor};
use crate::{chunked, route, snapshot};
use croaring::{Bitmap, Portable};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use parking_lot::RwLock;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

type Shared = Arc<RwLock<Registry>>;

/// Raise an engine error as its Python exception (`reach.errors`).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let (class, args): (&str, (Option<u32>, String)) = match e {
        Error::Invalid { code, message } => ("PushError", (Some(code), message)),
        Error::Load { .. } => ("LoadError", (None, e.to_string())),
        Error::Snapshot(_) => ("SnapshotError", (None, e.to_string())),
        Error::Io(m) => return PyOSError::new_err(m),
    };
    let made = PyModule::import(py, "reach.errors").and_then(|m| {
        let cls = m.getattr(class)?;
        match args {
            (Some(code), msg) => cls.call1((code, msg)),
            (None, msg) => cls.call1((msg,)),
        }
    });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

trait OrRaise<T> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

/// Read a validated audience (`reach.jpush.Audience` or anything with its attributes).
fn audience(obj: &Bound<'_, PyAny>) -> PyResult<AudienceSpec> {
    let list = |name: &str| -> PyResult<Vec<String>> { obj.getattr(name)?.extract() };
    Ok(AudienceSpec {
        all: obj.getattr("all")?.extract()?,
        tag: list("tag")?,
        tag_and: list("tag_and")?,
        tag_not: list("tag_not")?,
        alias: list("alias")?,
        registration_id: list("registration_id")?,
        segment: list("segment")?,
        abtest: list("abtest")?,
    })
}

fn platforms(py: Python<'_>, names: Option<Vec<String>>) -> PyResult<Option<Vec<Platform>>> {
    names
        .map(|v| {
            v.iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .or_raise(py)
}

/// A request's audience and platform filter, read from Python.
type Request = (AudienceSpec, Option<Vec<Platform>>);

fn request(
    py: Python<'_>,
    audience: &Bound<'_, PyAny>,
    platforms: Option<Vec<String>>,
) -> PyResult<Request> {
    Ok((self::audience(audience)?, self::platforms(py, platforms)?))
}

/// Compile `req` against the registry and hand the expression to `f`, under the read lock
/// with the GIL released.
fn with_expr<T: Send>(
    py: Python<'_>,
    reg: &Shared,
    req: &Request,
    f: impl for<'r> FnOnce(expr::Expr<'r>) -> T + Send,
) -> PyResult<T> {
    py.detach(|| expr::compile(&reg.read(), &req.0, req.1.as_deref()).map(f))
        .or_raise(py)
}

fn portable(py: Python<'_>, b: &Bitmap) -> Py<PyBytes> {
    PyBytes::new(py, &b.serialize::<Portable>()).unbind()
}

fn from_portable(py: Python<'_>, data: &[u8]) -> PyResult<Bitmap> {
    Bitmap::try_deserialize::<Portable>(data)
        .ok_or_else(|| to_py(py, Error::invalid("not a portable roaring bitmap")))
}

/// The contents of a numpy array, which must be contiguous.
fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|e| PyValueError::new_err(format!("arrays must be contiguous: {e}")))
}

fn opt_slice<'a, T: numpy::Element>(
    a: &'a Option<PyReadonlyArray1<'_, T>>,
) -> PyResult<Option<&'a [T]>> {
    a.as_ref().map(slice).transpose()
}

fn ids_array(py: Python<'_>, ids: Vec<u32>) -> Bound<'_, PyArray1<u32>> {
    PyArray1::from_vec(py, ids)
}

fn strings(reg: &Shared, ids: &[u32]) -> Vec<String> {
    let r = reg.read();
    ids.iter()
        .map(|&d| r.registration_id(d).to_owned())
        .collect()
}

/// A device registry: interned registration IDs and roaring-bitmap memberships.
#[pyclass(name = "Registry", module = "reach._core", frozen)]
pub struct PyRegistry {
    inner: Shared,
}

impl PyRegistry {
    /// Run `f` under the write lock with the GIL released; its error becomes a Python one.
    fn write<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Registry) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&mut self.inner.write())).or_raise(py)
    }
}

#[pymethods]
impl PyRegistry {
    #[new]
    fn new() -> Self {
        PyRegistry {
            inner: Arc::new(RwLock::new(Registry::new())),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.read().len() as usize
    }

    #[pyo3(signature = (registration_id, platform, vendor=None, tags=Vec::new(), alias=None, mobile=None, online=false))]
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &self,
        py: Python<'_>,
        registration_id: &str,
        platform: &str,
        vendor: Option<&str>,
        tags: Vec<String>,
        alias: Option<&str>,
        mobile: Option<&str>,
        online: bool,
    ) -> PyResult<u32> {
        let p = Platform::parse(platform).or_raise(py)?;
        let v = vendor.map(Vendor::parse).transpose().or_raise(py)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        py.detach(|| {
            self.inner
                .write()
                .upsert(registration_id, p, v, &tags, alias, mobile, online)
        })
        .or_raise(py)
    }

    fn add_tags(&self, py: Python<'_>, registration_id: &str, tags: Vec<String>) -> PyResult<()> {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.write(py, |r| r.add_tags(registration_id, &tags))
    }

    fn remove_tags(
        &self,
        py: Python<'_>,
        registration_id: &str,
        tags: Vec<String>,
    ) -> PyResult<()> {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.write(py, |r| r.remove_tags(registration_id, &tags))
    }

    fn set_alias(
        &self,
        py: Python<'_>,
        registration_id: &str,
        alias: Option<&str>,
    ) -> PyResult<()> {
        self.write(py, |r| r.set_alias(registration_id, alias))
    }

    fn set_mobile(
        &self,
        py: Python<'_>,
        registration_id: &str,
        mobile: Option<&str>,
    ) -> PyResult<()> {
        self.write(py, |r| r.set_mobile(registration_id, mobile))
    }

    fn set_online(&self, py: Python<'_>, registration_id: &str, online: bool) -> PyResult<()> {
        self.write(py, |r| r.set_online(registration_id, online))
    }

    fn delete(&self, py: Python<'_>, registration_id: &str) -> bool {
        py.detach(|| self.inner.write().delete(registration_id))
    }

    fn device<'py>(
        &self,
        py: Python<'py>,
        registration_id: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(d) = py.detach(|| self.inner.read().device(registration_id)) else {
            return Ok(None);
        };
        let out = PyDict::new(py);
        out.set_item("registration_id", d.registration_id)?;
        out.set_item("platform", d.platform.map(Platform::name))?;
        out.set_item("vendor", d.vendor.map(Vendor::name))?;
        out.set_item("tags", d.tags)?;
        out.set_item("alias", d.alias)?;
        out.set_item("mobile", d.mobile)?;
        out.set_item("online", d.online)?;
        Ok(Some(out))
    }

    fn device_id(&self, registration_id: &str) -> Option<u32> {
        self.inner.read().device_id(registration_id)
    }

    fn tags(&self) -> Vec<String> {
        self.inner
            .read()
            .tag_names()
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn load_jsonl(&self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        py.detach(|| {
            let data = load::read_file(&path)?;
            self.inner.write().load_jsonl(&data)
        })
        .or_raise(py)
    }

    #[pyo3(signature = (rid_bytes, rid_offsets, platform, vendor=None, tag_names=Vec::new(), tag_indptr=None, tag_indices=None, alias_bytes=None, alias_offsets=None, online=None))]
    #[allow(clippy::too_many_arguments)]
    fn load_arrays(
        &self,
        py: Python<'_>,
        rid_bytes: PyReadonlyArray1<'_, u8>,
        rid_offsets: PyReadonlyArray1<'_, u64>,
        platform: PyReadonlyArray1<'_, u8>,
        vendor: Option<PyReadonlyArray1<'_, u8>>,
        tag_names: Vec<String>,
        tag_indptr: Option<PyReadonlyArray1<'_, u64>>,
        tag_indices: Option<PyReadonlyArray1<'_, u32>>,
        alias_bytes: Option<PyReadonlyArray1<'_, u8>>,
        alias_offsets: Option<PyReadonlyArray1<'_, u64>>,
        online: Option<PyReadonlyArray1<'_, bool>>,
    ) -> PyResult<usize> {
        let rid_bytes = slice(&rid_bytes)?;
        let rid_offsets = slice(&rid_offsets)?;
        let platform = slice(&platform)?;
        let vendor = opt_slice(&vendor)?;
        let tag_indptr = opt_slice(&tag_indptr)?;
        let tag_indices = opt_slice(&tag_indices)?;
        let alias_bytes = opt_slice(&alias_bytes)?;
        let alias_offsets = opt_slice(&alias_offsets)?;
        let online = opt_slice(&online)?;
        py.detach(|| {
            self.inner.write().load_arrays(Arrays {
                rid_bytes,
                rid_offsets,
                platform,
                vendor,
                tag_names: &tag_names,
                tag_indptr,
                tag_indices,
                alias_bytes,
                alias_offsets,
                online,
            })
        })
        .or_raise(py)
    }

    fn add_segment(
        &self,
        py: Python<'_>,
        name: &str,
        registration_ids: Vec<String>,
    ) -> PyResult<u64> {
        py.detach(|| {
            let mut reg = self.inner.write();
            let mut ids: Vec<u32> = registration_ids
                .iter()
                .filter_map(|r| reg.device_id(r))
                .collect();
            ids.sort_unstable();
            reg.add_static_segment(name, Bitmap::of(&ids))
        })
        .or_raise(py)
    }

    fn add_segment_bitmap(&self, py: Python<'_>, name: &str, portable: &[u8]) -> PyResult<u64> {
        let members = from_portable(py, portable)?;
        self.write(py, |r| r.add_static_segment(name, members))
    }

    fn add_dynamic_segment(
        &self,
        py: Python<'_>,
        name: &str,
        audience: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let spec = self::audience(audience)?;
        self.write(py, |r| r.add_dynamic_segment(name, spec))
    }

    fn add_abtest(
        &self,
        py: Python<'_>,
        name: &str,
        base: &Bound<'_, PyAny>,
        groups: Vec<(String, u32)>,
    ) -> PyResult<()> {
        let spec = audience(base)?;
        self.write(py, |r| r.add_abtest(name, spec, &groups))
    }

    /// `apns_production` is the default APNs environment of the resolution's iOS batches.
    #[pyo3(signature = (audience, platforms=None, apns_production=true))]
    fn resolve(
        &self,
        py: Python<'_>,
        audience: &Bound<'_, PyAny>,
        platforms: Option<Vec<String>>,
        apns_production: bool,
    ) -> PyResult<PyResolution> {
        let req = request(py, audience, platforms)?;
        let bitmap = with_expr(py, &self.inner, &req, |e| eval::evaluate(e, None))?;
        Ok(PyResolution {
            bitmap,
            registry: self.inner.clone(),
            request: req,
            apns_production,
        })
    }

    #[pyo3(signature = (audience, platforms=None))]
    fn count(
        &self,
        py: Python<'_>,
        audience: &Bound<'_, PyAny>,
        platforms: Option<Vec<String>>,
    ) -> PyResult<u64> {
        let req = request(py, audience, platforms)?;
        with_expr(py, &self.inner, &req, eval::count)
    }

    #[pyo3(signature = (audience, platforms=None))]
    fn _kernel_floor(
        &self,
        py: Python<'_>,
        audience: &Bound<'_, PyAny>,
        platforms: Option<Vec<String>>,
    ) -> PyResult<u64> {
        let req = request(py, audience, platforms)?;
        with_expr(py, &self.inner, &req, |e| eval::naive(e).cardinality())
    }

    fn tag_members(&self, py: Python<'_>, tag: &str) -> Py<PyBytes> {
        let b = py.detach(|| {
            self.inner
                .read()
                .tag_bitmap(tag)
                .cloned()
                .unwrap_or_default()
        });
        portable(py, &b)
    }

    fn set_tag_members(&self, py: Python<'_>, tag: &str, portable: &[u8]) -> PyResult<()> {
        let members = from_portable(py, portable)?;
        self.write(py, |r| r.set_tag_members(tag, &members))
    }

    fn memory_usage(&self) -> HashMap<&'static str, usize> {
        self.inner.read().memory_usage().into_iter().collect()
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| {
            // Encode under the read lock, write after releasing it.
            let data = snapshot::encode(&self.inner.read());
            snapshot::write_atomic(&path, &data)
        })
        .or_raise(py)
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyRegistry> {
        let reg = py.detach(|| snapshot::load(&path)).or_raise(py)?;
        Ok(PyRegistry {
            inner: Arc::new(RwLock::new(reg)),
        })
    }
}

/// The devices an audience reaches.
#[pyclass(name = "Resolution", module = "reach._core", frozen)]
pub struct PyResolution {
    bitmap: Bitmap,
    registry: Shared,
    request: Request,
    apns_production: bool,
}

#[pymethods]
impl PyResolution {
    fn __len__(&self) -> usize {
        self.bitmap.cardinality() as usize
    }

    /// The interned device ids, ascending.
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        let v = py.detach(|| self.bitmap.to_vec());
        ids_array(py, v)
    }

    fn registration_ids(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| strings(&self.registry, &self.bitmap.to_vec()))
    }

    fn to_bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        portable(py, &self.bitmap)
    }

    /// Delivery batches of at most `max_size` ids; iOS batches carry `apns_production`, by
    /// default the environment the resolution was made for (the push's option).
    #[pyo3(signature = (max_size=1000, apns_production=None))]
    fn batches(
        &self,
        py: Python<'_>,
        max_size: usize,
        apns_production: Option<bool>,
    ) -> PyResult<Vec<PyBatch>> {
        let apns_production = apns_production.unwrap_or(self.apns_production);
        let bs = py.detach(|| {
            route::batches(
                &self.registry.read(),
                &self.bitmap,
                max_size,
                apns_production,
            )
        });
        Ok(bs
            .into_iter()
            .map(|b| PyBatch {
                platform: b.platform,
                vendor: b.vendor,
                apns_production: b.apns_production,
                len: b.ids.len(),
                ids: ids_array(py, b.ids).unbind(),
                registry: self.registry.clone(),
            })
            .collect())
    }

    /// The plan with the size of every step. Re-evaluates the audience against the registry
    /// as it is now (it may have changed since the resolution was made).
    fn explain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let steps = with_expr(py, &self.registry, &self.request, |e| {
            let mut steps: Vec<Step> = Vec::new();
            eval::evaluate(e, Some(&mut steps));
            steps
        })?;
        steps
            .into_iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("step", s.op)?;
                d.set_item("operand", s.operand)?;
                d.set_item("operand_size", s.operand_size)?;
                d.set_item("result", s.result)?;
                Ok(d)
            })
            .collect()
    }
}

/// One delivery batch.
#[pyclass(name = "Batch", module = "reach._core", frozen)]
pub struct PyBatch {
    platform: Platform,
    vendor: Option<Vendor>,
    apns_production: Option<bool>,
    ids: Py<PyArray1<u32>>,
    len: usize,
    registry: Shared,
}

#[pymethods]
impl PyBatch {
    #[getter]
    fn platform(&self) -> &'static str {
        self.platform.name()
    }
    #[getter]
    fn vendor(&self) -> Option<&'static str> {
        self.vendor.map(Vendor::name)
    }
    #[getter]
    fn apns_production(&self) -> Option<bool> {
        self.apns_production
    }
    #[getter]
    fn ids(&self, py: Python<'_>) -> Py<PyArray1<u32>> {
        self.ids.clone_ref(py)
    }
    fn registration_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let ids: Vec<u32> = self
            .ids
            .bind(py)
            .readonly()
            .as_slice()
            .map(<[u32]>::to_vec)
            .unwrap_or_default();
        Ok(strings(&self.registry, &ids))
    }
    fn __len__(&self) -> usize {
        self.len
    }
    fn __repr__(&self) -> String {
        format!(
            "Batch(platform={:?}, vendor={:?}, size={})",
            self.platform.name(),
            self.vendor.map(Vendor::name),
            self.len
        )
    }
}

/// Set the result size below which evaluation switches to id lists (tests drive both paths
/// over small registries with it; it never changes a result).
#[pyfunction]
fn _set_small_threshold(n: u64) {
    eval::set_small_threshold(n);
}

/// Test and benchmark hook: chunk-by-chunk evaluation (`chunked::set_chunking`).
#[pyfunction]
fn _set_chunking(ranges_per_core: u64, min_ids: u64) {
    chunked::set_chunking(ranges_per_core, min_ids);
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SMALL_THRESHOLD_DEFAULT", eval::SMALL)?;
    m.add(
        "CHUNKING_DEFAULT",
        (chunked::RANGES_PER_CORE_DEFAULT, chunked::MIN_IDS_DEFAULT),
    )?;
    let py = m.py();
    m.add(
        "PLATFORMS",
        PyTuple::new(py, Platform::ALL.iter().map(|p| p.name()))?,
    )?;
    m.add(
        "VENDORS",
        PyTuple::new(py, Vendor::ALL.iter().map(|v| v.name()))?,
    )?;
    m.add_class::<PyRegistry>()?;
    m.add_class::<PyResolution>()?;
    m.add_class::<PyBatch>()?;
    m.add_function(wrap_pyfunction!(_set_small_threshold, m)?)?;
    m.add_function(wrap_pyfunction!(_set_chunking, m)?)?;
    Ok(())
}
