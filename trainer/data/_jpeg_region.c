/* Decode one rectangle of a JPEG with libjpeg-turbo, as DALI's image_random_crop does on the CPU.
 *
 * Why our own code: no package on PyPI exposes libjpeg-turbo's partial decode (jpeg_skip_scanlines,
 * jpeg_crop_scanline): simplejpeg, Pillow, OpenCV and torchvision decode whole images; PyTurboJPEG needs a
 * system libturbojpeg >= 3 and has no region decode either. Rows below the region are never decoded, rows
 * above it only entropy-decoded, and columns outside it skip the IDCT, upsampling and colour conversion.
 * The pixels are those of a whole-image decode, bit for bit, for every layout (tests/unit/
 * test_jpeg_region_layouts.py, tests/unit/test_jpeg_fuzz.py): rows and columns are skipped only on the layouts
 * proven so (skipping_is_proven); others, and progressive files libjpeg block-smooths, are decoded from the
 * first row over the full width, down to the box's last row.
 *
 * decode_region(data, out, scale_denom, top, left, flip, *, max_pixels, max_scans) fills `out`, a writable
 * C-contiguous (h, w, 3) uint8 buffer, with the RGB pixels [top, top + h) x [left, left + w) of the image
 * decoded at 1/scale_denom size, mirrored left-right if `flip`. top and left must be in 0..65535 (never
 * wrapped). Unsupported (a ValueError) for bytes another decoder may read: not a JPEG, not YCbCr, RGB or
 * greyscale. ValueError for the rest: a region outside the image, any libjpeg warning (corrupt data is
 * refused, never filled grey), a single-scan file with no end-of-image marker after its scan (truncated),
 * more than max_pixels pixels, more than max_scans scans or 16 component passes over max_pixels (CPU-time
 * bombs). The GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

/* Work bounds, as trainer/data/jpeg.py passes them: PIL's (and data_prep's) pixel limit; a scan limit far above
 * any encoder's (libjpeg's progressive files have 10, mozjpeg's up to ~20). */
#define DEFAULT_MAX_PIXELS 89478485
#define DEFAULT_MAX_SCANS 100

#define ROWS_PER_CALL 16
#define MAX_DIMENSION 65535  /* a JPEG's height and width are 16-bit */

struct strict_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int unsupported;  /* not a JPEG, or not one libjpeg-turbo gives RGB for: another decoder may read it */
};

struct scan_limit {  /* djpeg's -maxscans: libjpeg calls the progress monitor at least once per scan */
    struct jpeg_progress_mgr pub;
    int max_scans, scans_seen;
    unsigned long long work, max_work;  /* pixels x components entropy-decoded, over all scans so far */
};

static void fail(j_common_ptr cinfo) {
    struct strict_error *err = (struct strict_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    err->unsupported = cinfo->err->msg_code == JERR_NO_SOI;
    longjmp(err->jump, 1);
}

static void warning_is_error(j_common_ptr cinfo, int level) {
    if (level < 0) fail(cinfo);  /* as simplejpeg's strict mode: corrupt data ends the decode */
}

static void refuse(j_common_ptr cinfo, const char *what, unsigned long long limit) {
    struct strict_error *err = (struct strict_error *)cinfo->err;
    snprintf(err->message, JMSG_LENGTH_MAX, "more than %llu %s (a CPU-time bomb): refused", limit, what);
    err->unsupported = 0;
    longjmp(err->jump, 1);
}

/* Each scan entropy-decodes its components over the whole image: 100 scans of a 9459x9459 image would take
 * minutes, so the work is bounded too, at 16 component passes over the largest image allowed (libjpeg's
 * progressive files take 10 passes: 12 scans). */
static void check_scans(j_common_ptr cinfo) {
    struct scan_limit *limit = (struct scan_limit *)cinfo->progress;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number <= limit->scans_seen) return;
    limit->scans_seen = d->input_scan_number;
    if (limit->scans_seen > limit->max_scans) refuse(cinfo, "scans", (unsigned long long)limit->max_scans);
    limit->work += (unsigned long long)d->image_width * d->image_height * (unsigned)d->comps_in_scan;
    if (limit->work > limit->max_work) refuse(cinfo, "pixels x components in all scans", limit->max_work);
}

/* Entropy-coded data never holds FF D9, so a cut-off file has no EOI after the start of its scan. */
static int has_eoi_after(const unsigned char *data, size_t size, size_t start) {
    for (size_t i = size; i >= start + 2; i--)
        if (data[i - 2] == 0xFF && data[i - 1] == 0xD9) return 1;
    return 0;
}

/* The layouts whose skipped rows and cropped columns tests/unit/test_jpeg_region_layouts.py proves equal to a
 * whole decode: greyscale, and luma 1x1, 2x1, 1x2 or 2x2 over 1x1 chroma (4:4:4, 4:2:2, 4:4:0, 4:2:0).
 * libjpeg-turbo 2.1's jpeg_skip_scanlines and jpeg_crop_scanline give wrong pixels on others (4:1:0, 2x4 luma:
 * up to 170 levels off), so those are decoded from the first row over the full width. */
static int skipping_is_proven(j_decompress_ptr cinfo) {
    if (cinfo->num_components == 1) return 1;
    jpeg_component_info *c = cinfo->comp_info;
    return cinfo->num_components == 3 && c[0].h_samp_factor <= 2 && c[0].v_samp_factor <= 2 &&
           c[1].h_samp_factor == 1 && c[1].v_samp_factor == 1 && c[2].h_samp_factor == 1 &&
           c[2].v_samp_factor == 1;
}

/* A progressive file whose scans leave low AC coefficients unknown is smoothed from the DC values of blocks
 * up to two away (libjpeg-turbo 2.1's 5x5 block smoothing), across any crop or skip: decoded as unproven. */
static int smooths_blocks(j_decompress_ptr cinfo) {
    if (!cinfo->progressive_mode || !cinfo->do_block_smoothing || cinfo->coef_bits == NULL) return 0;
    for (int ci = 0; ci < cinfo->num_components; ci++)
        for (int k = 1; k <= 9; k++)
            if (cinfo->coef_bits[ci][k] != 0) return 1;
    return 0;
}

static void copy_mirrored(unsigned char *restrict dst, const unsigned char *restrict src, JDIMENSION width) {
    src += (size_t)(width - 1) * 3;
    for (JDIMENSION x = 0; x < width; x++, dst += 3, src -= 3) {
        dst[0] = src[0];
        dst[1] = src[1];
        dst[2] = src[2];
    }
}

static int decode(const unsigned char *data, size_t size, unsigned char *out, int scale_denom, JDIMENSION top,
                  JDIMENSION left, JDIMENSION height, JDIMENSION width, int flip, unsigned long long max_pixels,
                  int max_scans, char *message, int *unsupported) {
    struct jpeg_decompress_struct cinfo;
    struct strict_error err;
    struct scan_limit limit = {{check_scans, 0, 0, 0, 0}, max_scans, 0, 0, 16 * max_pixels};
    unsigned char *volatile rows = NULL;  /* volatile: freed after a longjmp */
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = fail;
    err.pub.emit_message = warning_is_error;
    err.unsupported = 0;
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &limit.pub;
    if (setjmp(err.jump)) {
        strcpy(message, err.message);
        *unsupported = err.unsupported;
        goto failed;
    }
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB &&
        cinfo.jpeg_color_space != JCS_GRAYSCALE) {
        strcpy(message, "not a YCbCr, RGB or greyscale JPEG");
        *unsupported = 1;
        goto failed;
    }
    if ((unsigned long long)cinfo.image_width * cinfo.image_height > max_pixels) {  /* before any allocation */
        snprintf(message, JMSG_LENGTH_MAX, "the image is %ux%u, more than %llu pixels: refused", cinfo.image_width,
                 cinfo.image_height, max_pixels);
        goto failed;
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = scale_denom;
    jpeg_start_decompress(&cinfo);  /* a progressive file is entropy-decoded in full here */
    if ((size_t)top + height > cinfo.output_height || (size_t)left + width > cinfo.output_width || height == 0 ||
        width == 0) {
        snprintf(message, JMSG_LENGTH_MAX, "region %ux%u at (%u, %u) is outside the %ux%u image", height, width, top,
                 left, cinfo.output_height, cinfo.output_width);
        goto failed;
    }
    if (!jpeg_has_multiple_scans(&cinfo) && !has_eoi_after(data, size, size - cinfo.src->bytes_in_buffer)) {
        strcpy(message, "no end-of-image marker after the scan: the file is truncated");
        goto failed;
    }
    /* Crop only a whole iMCU (16 pixels at most for the proven layouts, at scale) away from the box: the
     * chroma upsampling then sees the neighbours a whole decode sees (with one column of margin: up to 13
     * levels off on a narrow box, e.g. one column at the left edge). Rows are skipped right to the box. */
    JDIMENSION imcu_cols = (JDIMENSION)(cinfo.max_h_samp_factor * cinfo.min_DCT_scaled_size);
    int proven = skipping_is_proven(&cinfo) && !smooths_blocks(&cinfo);
    JDIMENSION first = proven ? top : 0;  /* unproven: rows from the first, read and dropped */
    JDIMENSION xoffset = proven && left >= imcu_cols ? left - imcu_cols : 0;
    JDIMENSION xend = proven && left + width + imcu_cols < cinfo.output_width ? left + width + imcu_cols
                                                                              : cinfo.output_width;
    JDIMENSION xwidth = xend - xoffset;
    if (xwidth < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoffset, &xwidth);
    JDIMENSION skip = left - xoffset;
    size_t stride = (size_t)xwidth * 3;
    if (skip != 0 || xwidth != width || flip || first != top) {  /* rows go through a buffer unless they fit */
        rows = malloc(stride * ROWS_PER_CALL);
        if (rows == NULL) {
            strcpy(message, "out of memory");
            goto failed;
        }
    }
    if (first > 0) jpeg_skip_scanlines(&cinfo, first);
    for (JDIMENSION y = first; y < top + height;) {
        JSAMPROW targets[ROWS_PER_CALL];  /* several rows per call, as TurboJPEG asks for them: ~4% faster */
        JDIMENSION end = y < top ? top : top + height;  /* rows above the box are read into the buffer */
        JDIMENSION want = end - y < ROWS_PER_CALL ? end - y : ROWS_PER_CALL;
        for (JDIMENSION i = 0; i < want; i++)
            targets[i] = rows ? rows + i * stride : out + (size_t)(y - top + i) * width * 3;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, targets, want);
        if (got == 0) {
            strcpy(message, "libjpeg returned no row");
            goto failed;
        }
        for (JDIMENSION i = 0; rows && y >= top && i < got; i++) {
            unsigned char *dst = out + (size_t)(y - top + i) * width * 3;
            if (flip)
                copy_mirrored(dst, rows + i * stride + (size_t)skip * 3, width);
            else
                memcpy(dst, rows + i * stride + (size_t)skip * 3, (size_t)width * 3);
        }
        y += got;
    }
    free(rows);
    jpeg_destroy_decompress(&cinfo);  /* the rows below the region are never decoded */
    return 0;
failed:
    free(rows);
    jpeg_destroy_decompress(&cinfo);
    return -1;
}

static PyObject *Unsupported;  /* a ValueError: bytes another decoder may read (not a JPEG, CMYK) */

/* A Python int in lo..hi, refused (never wrapped: 2**32 + 3 is not 3, -1 not 2**32 - 1) otherwise. */
static int in_range(PyObject *value, const char *name, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *result) {
    Py_ssize_t v = PyNumber_AsSsize_t(value, NULL);  /* NULL: clipped to the Py_ssize_t range, not wrapped */
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be in %zd..%zd, not %S", name, lo, hi, value);
        return -1;
    }
    *result = v;
    return 0;
}

static PyObject *decode_region(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"data", "out", "scale_denom", "top", "left", "flip", "max_pixels", "max_scans", NULL};
    Py_buffer data, out;
    PyObject *target, *top_arg, *left_arg, *pixels_arg = NULL, *scans_arg = NULL;
    int scale_denom, flip;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*OiOOp|$OO", keywords, &data, &target, &scale_denom, &top_arg,
                                     &left_arg, &flip, &pixels_arg, &scans_arg))
        return NULL;
    if (PyObject_GetBuffer(target, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    char message[JMSG_LENGTH_MAX] = "";
    Py_ssize_t top, left, max_pixels = DEFAULT_MAX_PIXELS, max_scans = DEFAULT_MAX_SCANS;
    if (in_range(top_arg, "top", 0, MAX_DIMENSION, &top) || in_range(left_arg, "left", 0, MAX_DIMENSION, &left) ||
        (pixels_arg && in_range(pixels_arg, "max_pixels", 1, PY_SSIZE_T_MAX, &max_pixels)) ||
        (scans_arg && in_range(scans_arg, "max_scans", 1, INT_MAX, &max_scans))) {
        /* the error is set */
    } else if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8) {
        PyErr_SetString(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8");
    } else if (out.ndim != 3 || out.shape[2] != 3 || out.itemsize != 1 || out.shape[0] > MAX_DIMENSION ||
               out.shape[1] > MAX_DIMENSION) {
        PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous (height, width, 3) uint8 buffer, each side "
                                          "at most 65535");
    } else {
        int rc, unsupported = 0;
        Py_BEGIN_ALLOW_THREADS
        rc = decode(data.buf, (size_t)data.len, out.buf, scale_denom, (JDIMENSION)top, (JDIMENSION)left, (JDIMENSION)out.shape[0],
                    (JDIMENSION)out.shape[1], flip, (unsigned long long)max_pixels, (int)max_scans, message,
                    &unsupported);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            Py_INCREF(Py_None);
            result = Py_None;
        } else {
            PyErr_SetString(unsupported ? Unsupported : PyExc_ValueError, message);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_region", (PyCFunction)(void (*)(void))decode_region, METH_VARARGS | METH_KEYWORDS,
     "decode_region(data, out, scale_denom, top, left, flip, *, max_pixels, max_scans): fill out (h, w, 3 uint8) "
     "with that region."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg_region(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Unsupported = PyErr_NewException("_jpeg_region.Unsupported", PyExc_ValueError, NULL);
    if (Unsupported == NULL || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS);
    PyModule_AddIntConstant(m, "DEFAULT_MAX_SCANS", DEFAULT_MAX_SCANS);
    return m;
}
