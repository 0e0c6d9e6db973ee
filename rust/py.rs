//! The Python binding: every conversion between Python and the engine, and nothing else.
//!
//! Inputs are copied into Rust-owned values, then every bitmap walk runs with the GIL released
//! (`Python::detach`). Engine errors become Python exceptions here and only here.

use crate::error::Error;
use crate::eval::{self, Step};
use crate::expr::{self, Audience, AudienceSpec, Refusal, Rule};
use crate::load::{self, Arrays};
use crate::registry::{Platform, Registry, Vendor};
use crate::{chunked, route, snapshot};
use croaring::{Bitmap, Portable};
use hashbrown::HashTable;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use parking_lot::{Mutex, RwLock};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

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

/// A Python class over a registry behind a lock, whose errors raise as its API's exceptions.
trait Locked {
    type Inner: Send + Sync;
    fn lock(&self) -> &RwLock<Self::Inner>;
    /// The Python exception of an engine error, as this class's API raises it.
    fn raise(py: Python<'_>, e: Error) -> PyErr;

    /// Run `f` under the write lock with the GIL released (readers never see a half-applied
    /// mutation); its error becomes the class's Python exception.
    fn write<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Self::Inner) -> Result<T, Error> + Send,
    ) -> PyResult<T>
    where
        Self: Sync,
    {
        py.detach(|| f(&mut self.lock().write()))
            .map_err(|e| Self::raise(py, e))
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

/// The audience types, in the order of `AudienceSpec`'s fields; Python reads them as
/// `_core.AUDIENCE_TYPES` (`reach.jpush.AUDIENCE_TYPES`), so the two sides share one list.
const TYPES: [&str; 7] = [
    "tag",
    "tag_and",
    "tag_not",
    "alias",
    "registration_id",
    "segment",
    "abtest",
];

/// The string objects of a validated audience, held for one call so that its strings can be
/// borrowed (no copy, no allocation per string) while the GIL is released.
struct Held<'py> {
    all: bool,
    lists: Vec<Vec<Bound<'py, PyString>>>,
}

/// The items of an iteration, each a `str`.
fn py_strings<'py>(
    items: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
) -> PyResult<Vec<Bound<'py, PyString>>> {
    items
        .map(|item| Ok(item?.cast_into::<PyString>()?))
        .collect()
}

impl<'py> Held<'py> {
    fn new(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let lists = TYPES
            .iter()
            .map(|name| {
                let values = obj.getattr(*name)?;
                // A tuple (what `parse_audience` makes) is read by index, without an iterator.
                match values.cast::<PyTuple>() {
                    Ok(tuple) => py_strings(tuple.iter().map(Ok)),
                    Err(_) => py_strings(values.try_iter()?),
                }
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Held {
            all: obj.getattr("all")?.extract()?,
            lists,
        })
    }

    /// The audience with strings borrowed from the held objects.
    fn view(&self) -> PyResult<Audience<&str>> {
        let mut v = self.lists.iter().map(|l| {
            l.iter()
                .map(|s| s.to_str())
                .collect::<PyResult<Vec<&str>>>()
        });
        let mut next = || v.next().expect("seven types");
        Ok(Audience {
            all: self.all,
            tag: next()?,
            tag_and: next()?,
            tag_not: next()?,
            alias: next()?,
            registration_id: next()?,
            segment: next()?,
            abtest: next()?,
        })
    }
}

/// Read a validated audience (`reach.jpush.Audience` or anything with its attributes).
fn audience(obj: &Bound<'_, PyAny>) -> PyResult<AudienceSpec> {
    Ok(Held::new(obj)?.view()?.to_owned_spec())
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

/// Compile `audience` (a validated audience object) with the platform filter against the
/// registry and hand the expression to `f`, under the read lock with the GIL released.
fn with_expr<T: Send>(
    py: Python<'_>,
    reg: &Shared,
    audience: &Bound<'_, PyAny>,
    platforms: Option<&[Platform]>,
    f: impl for<'r> FnOnce(expr::Expr<'r>) -> T + Send,
) -> PyResult<T> {
    let held = Held::new(audience)?;
    let view = held.view()?;
    py.detach(|| expr::compile(&reg.read(), &view, platforms).map(f))
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

impl Locked for PyRegistry {
    type Inner = Registry;
    fn lock(&self) -> &RwLock<Registry> {
        &self.inner
    }
    fn raise(py: Python<'_>, e: Error) -> PyErr {
        to_py(py, e)
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

    /// The registration IDs of interned device ids (live or deleted), in the given order.
    fn registration_ids(
        &self,
        py: Python<'_>,
        ids: PyReadonlyArray1<'_, u32>,
    ) -> PyResult<Vec<String>> {
        let ids = slice(&ids)?;
        let capacity = self.inner.read().capacity();
        if let Some(&bad) = ids.iter().find(|&&d| d as usize >= capacity) {
            return Err(PyValueError::new_err(format!("no device has id {bad}")));
        }
        Ok(py.detach(|| strings(&self.inner, ids)))
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
            // Parsed before the write lock is taken: resolves go on meanwhile.
            let parsed = load::ParsedJsonl::from_file(&path)?;
            self.inner.write().apply_jsonl(parsed)
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
        let platforms = self::platforms(py, platforms)?;
        let bitmap = with_expr(py, &self.inner, audience, platforms.as_deref(), |e| {
            eval::evaluate(e, None)
        })?;
        Ok(PyResolution {
            bitmap,
            registry: self.inner.clone(),
            audience: audience.clone().unbind(),
            platforms,
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
        let platforms = self::platforms(py, platforms)?;
        with_expr(py, &self.inner, audience, platforms.as_deref(), eval::count)
    }

    #[pyo3(signature = (audience, platforms=None))]
    fn _kernel_floor(
        &self,
        py: Python<'_>,
        audience: &Bound<'_, PyAny>,
        platforms: Option<Vec<String>>,
    ) -> PyResult<u64> {
        let platforms = self::platforms(py, platforms)?;
        with_expr(py, &self.inner, audience, platforms.as_deref(), |e| {
            eval::naive(e).cardinality()
        })
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
    /// The validated audience object resolved (immutable: a `reach.jpush.Audience`), kept for
    /// `explain` instead of a copy of its strings.
    audience: Py<PyAny>,
    platforms: Option<Vec<Platform>>,
    apns_production: bool,
}

impl PyResolution {
    /// This resolution intersected with one attribute bitmap of the registry as it is now.
    fn restricted(&self, py: Python<'_>, attribute: fn(&Registry) -> &Bitmap) -> PyResolution {
        let bitmap = py.detach(|| self.bitmap.and(attribute(&self.registry.read())));
        PyResolution {
            bitmap,
            registry: self.registry.clone(),
            audience: self.audience.clone_ref(py),
            platforms: self.platforms.clone(),
            apns_production: self.apns_production,
        }
    }
}

#[pymethods]
impl PyResolution {
    fn __len__(&self) -> usize {
        self.bitmap.cardinality() as usize
    }

    /// The interned device ids, ascending, as a numpy array that owns them (no copy); written
    /// on both cores from 1M ids (`export`).
    fn ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        let v = py.detach(|| crate::export::to_vec(&self.bitmap));
        ids_array(py, v)
    }

    fn registration_ids(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| strings(&self.registry, &self.bitmap.to_vec()))
    }

    fn to_bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        portable(py, &self.bitmap)
    }

    /// The devices of this resolution that are online now.
    fn online(&self, py: Python<'_>) -> PyResolution {
        self.restricted(py, Registry::online_bitmap)
    }

    /// The devices of this resolution that have a mobile number now.
    fn with_mobile(&self, py: Python<'_>) -> PyResolution {
        self.restricted(py, Registry::mobile_bitmap)
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
        let audience = self.audience.bind(py);
        let steps = with_expr(
            py,
            &self.registry,
            audience,
            self.platforms.as_deref(),
            |e| {
                let mut steps: Vec<Step> = Vec::new();
                eval::evaluate(e, Some(&mut steps));
                steps
            },
        )?;
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

/// The distinct values of an audience array (a list or tuple), in first-seen order, after
/// checking each against `rule` (`"name"` for tags and aliases, `"registration_id"`). The first
/// value that breaks it raises `ValueError(index, why)`, `why` one of `"type"` (not a string),
/// `"empty"`, `"chars"`, `"bytes"`, `"registration_id"`. The Python edge words the vendor's
/// messages; this is only the per-value work, one pass (~20 ns a value at 1,000 values, most
/// of it the look-up that drops repeats) instead of a regular expression per array and a dict
/// to drop duplicates.
#[pyfunction]
fn audience_values<'py>(values: &Bound<'py, PyAny>, rule: &str) -> PyResult<Bound<'py, PyTuple>> {
    let rule =
        Rule::parse(rule).ok_or_else(|| PyValueError::new_err(format!("unknown rule {rule:?}")))?;
    // A list's items are copied into a tuple once (one call, no Python object made); the
    // checks then borrow them from it, and it is the result when no value repeats.
    let tuple = if let Ok(list) = values.cast::<PyList>() {
        list.to_tuple()
    } else if let Ok(tuple) = values.cast::<PyTuple>() {
        tuple.clone()
    } else {
        return Err(PyValueError::new_err(
            "audience values must be a list or tuple",
        ));
    };
    let refused = |i: usize, why: Refusal| PyValueError::new_err((i, why.name()));
    let n = tuple.len();
    // Keyed by Python's own (cached) string hash: no hashing of the bytes here.
    let mut seen: HashTable<(u64, usize)> = HashTable::with_capacity(n);
    let mut repeats: Vec<usize> = Vec::new();
    // Whether item `k`, already checked (a `str`, UTF-8), is `text`.
    let is = |k: usize, text: &str| {
        tuple.get_borrowed_item(k).is_ok_and(|item| {
            item.cast::<PyString>()
                .is_ok_and(|s| s.to_str().is_ok_and(|t| t == text))
        })
    };
    for (i, item) in tuple.iter_borrowed().enumerate() {
        let s = item
            .cast::<PyString>()
            .map_err(|_| PyValueError::new_err((i, "type")))?;
        // A string that is not UTF-8 (a lone surrogate) has no allowed characters.
        let text = s.to_str().map_err(|_| refused(i, rule.not_utf8()))?;
        rule.check(text).map_err(|why| refused(i, why))?;
        let h = s.hash()? as u64;
        if seen.find(h, |&(kh, k)| kh == h && is(k, text)).is_some() {
            repeats.push(i);
        } else {
            seen.insert_unique(h, (h, i), |&(kh, _)| kh);
        }
    }
    if repeats.is_empty() {
        return Ok(tuple);
    }
    let mut skip = repeats.into_iter().peekable();
    let kept: Vec<_> = tuple
        .iter()
        .enumerate()
        .filter(|&(i, _)| skip.next_if_eq(&i).is_none())
        .map(|(_, item)| item)
        .collect();
    PyTuple::new(values.py(), kept)
}

/// Bytes of JSON Lines parsed so far by the loads of this process (for progress displays).
#[pyfunction]
fn _jsonl_progress() -> u64 {
    crate::jsonl::PARSED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
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

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: module initialisation runs before any of this module's code, so no CRoaring
    // object exists yet (CRoaring is linked into this module alone).
    unsafe { croaring::configure_rust_alloc() };
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SMALL_THRESHOLD_DEFAULT", eval::SMALL)?;
    m.add("NAME_MAX_BYTES", expr::NAME_MAX_BYTES)?;
    m.add("AUDIENCE_TYPES", PyTuple::new(m.py(), TYPES)?)?;
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
    m.add_function(wrap_pyfunction!(_jsonl_progress, m)?)?;
    m.add_function(wrap_pyfunction!(audience_values, m)?)?;
    m.add_function(wrap_pyfunction!(_set_chunking, m)?)?;
    add_ums(m)?;
    Ok(())
}

// ---- UMS (issue 4) --------------------------------------------------------------------------

use crate::ums::{self, ChannelType, SendSpec, Target, UmsRegistry, UserRecord};

type SharedUms = Arc<RwLock<UmsRegistry>>;

/// Raise an engine error of the UMS side: a refusal is `reach.ums.UmsError(code, message)`.
fn ums_err(py: Python<'_>, e: Error) -> PyErr {
    let Error::Invalid { code, message } = e else {
        return to_py(py, e);
    };
    match PyModule::import(py, "reach.ums")
        .and_then(|m| m.getattr("UmsError")?.call1((code, message)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

trait OrRaiseUms<T> {
    fn or_raise_ums(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaiseUms<T> for Result<T, Error> {
    fn or_raise_ums(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| ums_err(py, e))
    }
}

fn channel_type(py: Python<'_>, name: &str) -> PyResult<ChannelType> {
    ChannelType::parse(name).or_raise_ums(py)
}

/// Strings of interned ids, each below `capacity`, through `name`.
fn names_of(ids: &[u32], capacity: usize, name: impl Fn(u32) -> String) -> PyResult<Vec<String>> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= capacity) {
        return Err(PyValueError::new_err(format!("no string has id {bad}")));
    }
    Ok(ids.iter().map(|&i| name(i)).collect())
}

/// A user as Python passes it: userid, tags by scope, IDs by scope and channel type.
type UserTriple = (
    String,
    HashMap<String, Vec<String>>,
    HashMap<String, HashMap<String, Vec<String>>>,
);

/// The user record of a `UserTriple` (an unknown channel type is refused).
fn user_record(py: Python<'_>, (userid, tags, bindings): UserTriple) -> PyResult<UserRecord> {
    let mut record = UserRecord {
        userid,
        tags: tags.into_iter().collect(),
        ..Default::default()
    };
    for (scope, types) in bindings {
        let out = record.bindings.entry(scope).or_default();
        for (ty, ids) in types {
            out.insert(channel_type(py, &ty)?, ids);
        }
    }
    Ok(record)
}

/// The UMS users of one account: tags and channel bindings per scope, channels, segments, lists.
#[pyclass(name = "UmsRegistry", module = "reach._core", frozen)]
pub struct PyUmsRegistry {
    inner: SharedUms,
    /// The app routing's look-ups per JPush registry (`ums::DeviceMap`), keyed by the
    /// registry's allocation: a `Weak` keeps that allocation, so its address is not reused by
    /// another registry while the entry exists; entries of dropped registries are pruned.
    device_maps: Mutex<Vec<(Weak<RwLock<Registry>>, ums::DeviceMap)>>,
}

impl PyUmsRegistry {
    fn wrap(reg: UmsRegistry) -> Self {
        PyUmsRegistry {
            inner: Arc::new(RwLock::new(reg)),
            device_maps: Mutex::new(Vec::new()),
        }
    }
}

impl Locked for PyUmsRegistry {
    type Inner = UmsRegistry;
    fn lock(&self) -> &RwLock<UmsRegistry> {
        &self.inner
    }
    fn raise(py: Python<'_>, e: Error) -> PyErr {
        ums_err(py, e)
    }
}

#[pymethods]
impl PyUmsRegistry {
    #[new]
    fn new() -> Self {
        PyUmsRegistry::wrap(UmsRegistry::new())
    }

    fn __len__(&self) -> usize {
        self.inner.read().len() as usize
    }

    #[pyo3(signature = (userid, tags=HashMap::new(), bindings=HashMap::new()))]
    fn upsert_user(
        &self,
        py: Python<'_>,
        userid: String,
        tags: HashMap<String, Vec<String>>,
        bindings: HashMap<String, HashMap<String, Vec<String>>>,
    ) -> PyResult<u32> {
        let record = user_record(py, (userid, tags, bindings))?;
        self.write(py, |r| r.upsert_user(&record))
    }

    /// `upsert_user` of `(userid, tags, bindings)` triples, all or nothing.
    fn upsert_users(&self, py: Python<'_>, users: Vec<UserTriple>) -> PyResult<Vec<u32>> {
        let records = users
            .into_iter()
            .map(|user| user_record(py, user))
            .collect::<PyResult<Vec<_>>>()?;
        self.write(py, |r| r.upsert_users(&records))
    }

    fn delete_user(&self, py: Python<'_>, userid: &str) -> bool {
        py.detach(|| self.inner.write().delete_user(userid))
    }

    fn user<'py>(&self, py: Python<'py>, userid: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(u) = py.detach(|| self.inner.read().user(userid)) else {
            return Ok(None);
        };
        let out = PyDict::new(py);
        out.set_item("userid", u.userid)?;
        out.set_item("tags", u.tags)?;
        let bindings = PyDict::new(py);
        for (scope, types) in u.bindings {
            let d = PyDict::new(py);
            for (ty, ids) in types {
                d.set_item(ty.name(), ids)?;
            }
            bindings.set_item(scope, d)?;
        }
        out.set_item("bindings", bindings)?;
        Ok(Some(out))
    }

    fn user_id(&self, userid: &str) -> Option<u32> {
        self.inner.read().user_id(userid)
    }

    /// The userids of interned user ids, in the given order.
    fn userids(&self, ids: PyReadonlyArray1<'_, u32>) -> PyResult<Vec<String>> {
        let ids = slice(&ids)?;
        let r = self.inner.read();
        names_of(ids, r.user_capacity(), |u| r.userid(u).to_owned())
    }

    /// The strings of interned channel registration IDs, in the given order.
    fn channel_ids(&self, ids: PyReadonlyArray1<'_, u32>) -> PyResult<Vec<String>> {
        let ids = slice(&ids)?;
        let r = self.inner.read();
        names_of(ids, r.id_capacity(), |i| r.channel_id(i).to_owned())
    }

    fn add_channel(&self, py: Python<'_>, key: &str, r#type: &str) -> PyResult<()> {
        let ty = channel_type(py, r#type)?;
        self.write(py, |r| r.add_channel(key, ty))
    }

    fn channels(&self) -> HashMap<String, &'static str> {
        let r = self.inner.read();
        r.channels()
            .iter()
            .map(|(k, t)| (k.clone(), t.name()))
            .collect()
    }

    fn add_segment(&self, py: Python<'_>, name: &str, userids: Vec<String>) -> PyResult<u64> {
        let userids: Vec<&str> = userids.iter().map(String::as_str).collect();
        self.write(py, |r| r.add_segment(name, &userids))
    }

    fn add_list(
        &self,
        py: Python<'_>,
        list_id: u64,
        userids: Vec<String>,
        ids: Vec<String>,
    ) -> PyResult<()> {
        let userids: Vec<&str> = userids.iter().map(String::as_str).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.write(py, |r| r.add_list(list_id, &userids, &ids))
    }

    fn load_users_jsonl(&self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        py.detach(|| {
            let data = std::fs::read(&path)?;
            self.inner.write().load_users_jsonl(&data)
        })
        .or_raise_ums(py)
    }

    /// Bulk: make the userids cut from `bytes` at `offsets` live; their ids, in order.
    fn add_users<'py>(
        &self,
        py: Python<'py>,
        bytes: PyReadonlyArray1<'_, u8>,
        offsets: PyReadonlyArray1<'_, u64>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let (bytes, offsets) = (slice(&bytes)?, slice(&offsets)?);
        let ids = self.write(py, |r| r.add_users(&ums::cut("userid", bytes, offsets)?))?;
        Ok(ids_array(py, ids))
    }

    /// Bulk: add the live users of a portable bitmap to a tag in a scope.
    fn add_tag_users(
        &self,
        py: Python<'_>,
        tag: &str,
        scope: &str,
        portable: &[u8],
    ) -> PyResult<()> {
        let members = from_portable(py, portable)?;
        self.write(py, |r| r.add_tag_users(tag, scope, &members))
    }

    /// Bulk: bind the IDs cut from `id_bytes` at `id_offsets` to `users` (row by row).
    fn bind_arrays(
        &self,
        py: Python<'_>,
        r#type: &str,
        scope: &str,
        users: PyReadonlyArray1<'_, u32>,
        id_bytes: PyReadonlyArray1<'_, u8>,
        id_offsets: PyReadonlyArray1<'_, u64>,
    ) -> PyResult<()> {
        let ty = channel_type(py, r#type)?;
        let (users, bytes, offsets) = (slice(&users)?, slice(&id_bytes)?, slice(&id_offsets)?);
        self.write(py, |r| {
            r.bind_many(ty, scope, users, &ums::cut("channel ID", bytes, offsets)?)
        })
    }

    /// Resolve a send over the channels of its template. One target: `broadcast`, `tags`,
    /// `userids`, `segment` or `custom` (`[(type, [IDs])]`). `rule`: the send strategy's
    /// `(channel key, delay)` stages; `apps`: `(app channel key, JPush registry)` to route
    /// those channels through, under `platforms` (None: all) and `apns_production`;
    /// `time_to_live` (seconds), `came_online` (`(app channel key, [(ID, seconds after the
    /// send)])`: when devices came online) and `online` (`(app channel key, [IDs])`: the IDs
    /// whose device was online at the send, instead of the JPush registry's online flags)
    /// decide the app channels' deliveries.
    #[pyo3(signature = (channels, broadcast=false, tags=None, userids=None, segment=None, custom=None, black=None, white=None, rule=None, apps=None, platforms=None, apns_production=true, time_to_live=0, came_online=None, online=None))]
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        py: Python<'_>,
        channels: Vec<String>,
        broadcast: bool,
        tags: Option<Vec<String>>,
        userids: Option<Vec<PyBackedStr>>,
        segment: Option<String>,
        custom: Option<Vec<(String, Vec<String>)>>,
        black: Option<u64>,
        white: Option<u64>,
        rule: Option<Vec<(String, u64)>>,
        apps: Option<Vec<(String, Py<PyRegistry>)>>,
        platforms: Option<Vec<String>>,
        apns_production: bool,
        time_to_live: u64,
        came_online: Option<Vec<ArrivalsOf>>,
        online: Option<Vec<(String, Vec<String>)>>,
    ) -> PyResult<PyUmsResolution> {
        let came_online: HashMap<String, Vec<(String, f64)>> =
            came_online.unwrap_or_default().into_iter().collect();
        let online: HashMap<String, Vec<String>> = online.unwrap_or_default().into_iter().collect();
        let target = match (broadcast, tags, userids, segment, custom) {
            (true, None, None, None, None) => Target::Broadcast,
            (false, Some(t), None, None, None) => Target::Tags(t),
            (false, None, Some(u), None, None) => {
                Target::Users(ums::UserNames::new(u.iter().map(|n| &**n)))
            }
            (false, None, None, Some(s), None) => Target::Segment(s),
            (false, None, None, None, Some(c)) => Target::Custom(
                c.into_iter()
                    .map(|(t, ids)| Ok((channel_type(py, &t)?, ids)))
                    .collect::<PyResult<_>>()?,
            ),
            _ => return Err(PyValueError::new_err("exactly one target must be given")),
        };
        let spec = SendSpec {
            target,
            channels,
            black,
            white,
        };
        let platforms = self::platforms(py, platforms)?;
        let devices: Vec<(String, Shared)> = apps
            .unwrap_or_default()
            .into_iter()
            .map(|(k, r)| (k, r.get().inner.clone()))
            .collect();
        let (mut res, stages, groups, app_online) = py
            .detach(|| {
                if matches!(spec.target, Target::Custom(_)) {
                    self.inner.write().prepare(&spec)?;
                }
                let r = self.inner.read();
                let mut res = r.resolve(&spec)?;
                let locked: Vec<_> = devices.iter().map(|(k, d)| (k, d, d.read())).collect();
                let mut routes = ums::AppRoutes::new();
                let mut maps = self.device_maps.lock();
                maps.retain(|(w, _)| w.strong_count() > 0);
                for (key, shared, dev) in &locked {
                    if let Some(c) = res.channels.iter().find(|c| &c.key == *key) {
                        let same = |w: &Weak<RwLock<Registry>>| w.as_ptr() == Arc::as_ptr(shared);
                        let at = maps.iter().position(|(w, _)| same(w)).unwrap_or_else(|| {
                            maps.push((Arc::downgrade(shared), ums::DeviceMap::new()));
                            maps.len() - 1
                        });
                        let map = &mut maps[at].1;
                        let mut app =
                            ums::AppDevices::new(&r, &c.ids, dev, platforms.as_deref(), map);
                        let interned = |s: &str| r.channel_id_of(s);
                        if let Some(ids) = online.get(key.as_str()) {
                            let ids: Vec<u32> = ids.iter().filter_map(|s| interned(s)).collect();
                            app = app.with_online(&Bitmap::of(&ids));
                        }
                        if let Some(events) = came_online.get(key.as_str()) {
                            let events: Vec<(u32, f64)> = events
                                .iter()
                                .filter_map(|(s, t)| Some((interned(s)?, *t)))
                                .collect();
                            app = app.with_arrivals(&events, time_to_live);
                        }
                        routes.insert((*key).clone(), app);
                    }
                }
                drop(maps);
                r.route_apps(&mut res, &routes);
                let stages = r.stages(&spec, &res, rule.as_deref(), &routes)?;
                let groups: Vec<Option<Vec<ums::AppGroup>>> = stages
                    .iter()
                    .map(|s| {
                        let ch = s.channel(&res);
                        let (key, _, dev) = locked.iter().find(|(k, _, _)| **k == ch.key)?;
                        let app = &routes[key.as_str()];
                        Some(app.groups(dev, &ch.ids, apns_production))
                    })
                    .collect();
                let app_online: HashMap<String, Vec<u32>> = routes
                    .iter()
                    .map(|(k, a)| (k.clone(), a.online.to_vec()))
                    .collect();
                Ok((res, stages, groups, app_online))
            })
            .or_raise_ums(py)?;
        let per_stage: Vec<u64> = stages.iter().map(|s| s.delivered_count(&res)).collect();
        let plain = stages.len() == res.channels.len()
            && stages
                .iter()
                .enumerate()
                .all(|(i, s)| s.index == i && s.sent.is_none() && s.delivered.is_none());
        // A send where every channel delivered to every user it reached delivered to the users
        // some channel reached: counted on first use (`UmsResolution.delivered`).
        let delivered = OnceLock::new();
        if !plain {
            // A fold, not `fast_or`: its lazy union makes a bitset of every container.
            let mut all = Bitmap::new();
            for s in &stages {
                all.or_inplace(s.delivered(&res));
            }
            let _ = delivered.set(all.cardinality());
        }
        let mut explain: Vec<(Option<u32>, ums::Step)> = std::mem::take(&mut res.steps)
            .into_iter()
            .map(|s| (None, s))
            .collect();
        for st in &stages {
            explain.extend(st.steps.iter().map(|s| (Some(st.stage), s.clone())));
        }
        let channels: Vec<Py<PyUmsChannel>> = res
            .channels
            .iter_mut()
            .map(|c| {
                let ids = std::mem::take(&mut c.ids);
                Py::new(py, PyUmsChannel::new(py, c, ids, self.inner.clone()))
            })
            .collect::<PyResult<_>>()?;
        let stages = stages
            .into_iter()
            .zip(groups)
            .zip(per_stage)
            .map(|((s, g), delivered)| {
                let groups = g.map(|g| {
                    g.into_iter()
                        .map(|a| {
                            let ids = ids_array(py, a.ids).unbind();
                            (
                                a.platform.name(),
                                a.vendor.map(|v| v.name()),
                                a.apns_production,
                                ids,
                            )
                        })
                        .collect()
                });
                // A stage that sends a channel's answer as it is shares its object (and ids).
                let channel = match s.sent {
                    None => channels[s.index].clone_ref(py),
                    Some(mut c) => {
                        let ids = std::mem::take(&mut c.ids);
                        Py::new(py, PyUmsChannel::new(py, &c, ids, self.inner.clone()))?
                    }
                };
                let stage = PyUmsStage {
                    stage: s.stage,
                    delay: s.delay,
                    offset: s.offset,
                    delivered,
                    delivered_ids: s.delivered_ids,
                    groups,
                    channel,
                };
                Py::new(py, stage)
            })
            .collect::<PyResult<_>>()?;
        let app_online = app_online
            .into_iter()
            .map(|(k, ids)| (k, ids_array(py, ids).unbind()))
            .collect();
        Ok(PyUmsResolution {
            channels,
            stages,
            app_online,
            delivered,
            res,
            explain,
            registry: self.inner.clone(),
        })
    }

    /// Add channel registration IDs to the undeliverable list, and remove others.
    #[pyo3(signature = (add=Vec::new(), remove=Vec::new()))]
    fn set_undeliverable(
        &self,
        py: Python<'_>,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> PyResult<()> {
        let add: Vec<&str> = add.iter().map(String::as_str).collect();
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        self.write(py, |r| r.set_undeliverable(&add, &remove))
    }

    /// The undeliverable IDs, in interning order.
    fn undeliverable(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| {
            let r = self.inner.read();
            r.undeliverable()
                .iter()
                .map(|i| r.channel_id(i).to_owned())
                .collect()
        })
    }

    /// Save the registry and the caller's `extra` bytes to `path` (atomically, checksummed).
    fn save(&self, py: Python<'_>, path: PathBuf, extra: Vec<u8>) -> PyResult<()> {
        py.detach(|| {
            // Encode under the read lock, write after releasing it.
            let data = ums::snapshot::encode(&self.inner.read(), &extra);
            snapshot::write_atomic(&path, &data)
        })
        .or_raise_ums(py)
    }

    /// A registry and its `extra` bytes from a file `save` wrote.
    #[staticmethod]
    fn load<'py>(py: Python<'py>, path: PathBuf) -> PyResult<(PyUmsRegistry, Bound<'py, PyBytes>)> {
        let (reg, extra) = py.detach(|| ums::snapshot::load(&path)).or_raise_ums(py)?;
        Ok((PyUmsRegistry::wrap(reg), PyBytes::new(py, &extra)))
    }

    fn memory_usage(&self) -> HashMap<&'static str, usize> {
        self.inner.read().memory_usage().into_iter().collect()
    }
}

/// The IDs one channel of a template send goes to.
#[pyclass(name = "UmsChannel", module = "reach._core", frozen)]
pub struct PyUmsChannel {
    key: String,
    ty: ChannelType,
    ids: Py<PyArray1<u32>>,
    len: usize,
    reached: u64,
    registry: SharedUms,
}

impl PyUmsChannel {
    /// The channel `c` answered with `ids` (taken out of `c`).
    fn new(py: Python<'_>, c: &ums::ChannelResult, ids: Vec<u32>, registry: SharedUms) -> Self {
        PyUmsChannel {
            key: c.key.clone(),
            ty: c.ty,
            reached: c.reached.count(),
            len: ids.len(),
            ids: ids_array(py, ids).unbind(),
            registry,
        }
    }
}

#[pymethods]
impl PyUmsChannel {
    #[getter]
    fn key(&self) -> &str {
        &self.key
    }
    #[getter]
    fn r#type(&self) -> &'static str {
        self.ty.name()
    }
    /// Interned channel registration IDs, ascending and distinct.
    #[getter]
    fn ids(&self, py: Python<'_>) -> Py<PyArray1<u32>> {
        self.ids.clone_ref(py)
    }
    /// How many users this channel reaches.
    #[getter]
    fn reached(&self) -> u64 {
        self.reached
    }
    fn channel_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let ids = self.ids.bind(py).readonly();
        let r = self.registry.read();
        names_of(slice(&ids)?, r.id_capacity(), |i| {
            r.channel_id(i).to_owned()
        })
    }
    fn __len__(&self) -> usize {
        self.len
    }
    fn __repr__(&self) -> String {
        format!(
            "UmsChannel(key={:?}, type={:?}, size={})",
            self.key,
            self.ty.name(),
            self.len
        )
    }
}

/// One stage of a template send: a channel's IDs, when they go out, whom they delivered to.
#[pyclass(name = "UmsStage", module = "reach._core", frozen)]
pub struct PyUmsStage {
    stage: u32,
    delay: u64,
    offset: u64,
    delivered: u64,
    delivered_ids: u64,
    groups: Option<Vec<AppGroupTuple>>,
    channel: Py<PyUmsChannel>,
}

/// `(app channel key, [(registration ID, seconds after the send)])`: when devices came online.
type ArrivalsOf = (String, Vec<(String, f64)>);

/// `(platform, vendor, apns_production, ids)` of one JPush delivery group.
type AppGroupTuple = (
    &'static str,
    Option<&'static str>,
    Option<bool>,
    Py<PyArray1<u32>>,
);

#[pymethods]
impl PyUmsStage {
    /// 1-based; every channel of a send without a strategy is stage 1.
    #[getter]
    fn stage(&self) -> u32 {
        self.stage
    }
    /// Seconds after the previous stage.
    #[getter]
    fn delay(&self) -> u64 {
        self.delay
    }
    /// Seconds after the send.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }
    /// The channel's IDs of this stage (`reached`: the users sent to).
    #[getter]
    fn channel(&self, py: Python<'_>) -> Py<PyUmsChannel> {
        self.channel.clone_ref(py)
    }
    /// How many users this stage delivered to.
    #[getter]
    fn delivered(&self) -> u64 {
        self.delivered
    }
    /// How many of its IDs delivered.
    #[getter]
    fn delivered_ids(&self) -> u64 {
        self.delivered_ids
    }
    /// For an app channel routed through a JPush app: its IDs per JPush delivery group,
    /// `(platform, vendor, apns_production, ids)`; None otherwise.
    #[getter]
    fn groups(&self, py: Python<'_>) -> Option<Vec<AppGroupTuple>> {
        self.groups.as_ref().map(|g| {
            g.iter()
                .map(|(p, v, a, ids)| (*p, *v, *a, ids.clone_ref(py)))
                .collect()
        })
    }
    fn __repr__(&self) -> String {
        let c = self.channel.get();
        format!(
            "UmsStage(stage={}, key={:?}, offset={}, size={}, delivered={})",
            self.stage, c.key, self.offset, c.len, self.delivered
        )
    }
}

/// The answer to a template send: per channel its IDs, its stages, and the users no channel
/// reaches.
#[pyclass(name = "UmsResolution", module = "reach._core", frozen)]
pub struct PyUmsResolution {
    channels: Vec<Py<PyUmsChannel>>,
    stages: Vec<Py<PyUmsStage>>,
    app_online: HashMap<String, Py<PyArray1<u32>>>,
    /// How many users some stage delivered to (set when resolving, or on first use).
    delivered: OnceLock<u64>,
    /// The send as resolved, its channels' IDs taken out (they are in `channels`): its
    /// audience, unreachable users and whole-send counts, computed on first use.
    res: ums::Resolution,
    /// Per channel then per stage (with its number): the counts after each step.
    explain: Vec<(Option<u32>, ums::Step)>,
    registry: SharedUms,
}

#[pymethods]
impl PyUmsResolution {
    /// Per app channel routed through a JPush app: the interned IDs of its routable IDs whose
    /// device was online at the send (the `online` given, else the JPush registry's flags).
    #[getter]
    fn app_online(&self, py: Python<'_>) -> HashMap<String, Py<PyArray1<u32>>> {
        self.app_online
            .iter()
            .map(|(k, a)| (k.clone(), a.clone_ref(py)))
            .collect()
    }

    /// The template's channels, in its order.
    #[getter]
    fn channels(&self, py: Python<'_>) -> Vec<Py<PyUmsChannel>> {
        self.channels.iter().map(|c| c.clone_ref(py)).collect()
    }
    /// The stages, in order (without a send strategy: every channel, all stage 1).
    #[getter]
    fn stages(&self, py: Python<'_>) -> Vec<Py<PyUmsStage>> {
        self.stages.iter().map(|c| c.clone_ref(py)).collect()
    }
    /// How many users the send targets (0 for custom channel IDs).
    #[getter]
    fn audience(&self) -> u64 {
        self.res.audience_count()
    }
    /// How many users some stage delivered to.
    #[getter]
    fn delivered(&self, py: Python<'_>) -> u64 {
        *py.detach(|| self.delivered.get_or_init(|| self.res.reached_count()))
    }
    /// The user ids of the audience that no channel reaches, ascending.
    fn unreachable<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        let v = py.detach(|| self.res.unreachable().to_vec());
        ids_array(py, v)
    }
    fn unreachable_userids(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| {
            let r = self.registry.read();
            self.res
                .unreachable()
                .iter()
                .map(|u| r.userid(u).to_owned())
                .collect()
        })
    }
    /// The count after every step: per channel, then per stage (with its `stage`), then for
    /// the whole send.
    fn explain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let whole = py.detach(|| self.res.whole_steps());
        self.explain
            .iter()
            .map(|(stage, s)| (*stage, s))
            .chain(whole.iter().map(|s| (None, s)))
            .map(|(stage, s)| {
                let d = PyDict::new(py);
                d.set_item("channel", s.channel.as_deref())?;
                if let Some(n) = stage {
                    d.set_item("stage", n)?;
                }
                d.set_item("step", s.step)?;
                d.set_item("unit", s.unit)?;
                d.set_item("count", s.count)?;
                Ok(d)
            })
            .collect()
    }
    /// Every ID of every channel.
    fn __len__(&self) -> usize {
        self.channels.iter().map(|c| c.get().len).sum()
    }
}

/// Register the UMS classes and the channel types (called once from the module init).
fn add_ums(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let names = ChannelType::ALL.iter().map(|t| t.name());
    m.add("UMS_CHANNEL_TYPES", PyTuple::new(m.py(), names)?)?;
    m.add_class::<PyUmsRegistry>()?;
    m.add_class::<PyUmsResolution>()?;
    m.add_class::<PyUmsChannel>()?;
    m.add_class::<PyUmsStage>()?;
    Ok(())
}
