/* Decode one rectangle of a JPEG with libjpeg-turbo, as DALI's image_random_crop does on the CPU.
 *
 * Why our own code: no package on PyPI exposes libjpeg-turbo's partial decode (jpeg_skip_scanlines,
 * jpeg_crop_scanline): simplejpeg, Pillow, OpenCV and torchvision decode whole images; PyTurboJPEG needs a
 * system libturbojpeg >= 3 and has no region decode either. Rows below the region are never decoded, rows
 * above it only entropy-decoded, and columns outside it skip the IDCT, upsampling and colour conversion.
 * The pixels are those of a whole-image decode (tests/unit/test_input_pipeline_region.py checks it).
 *
 * decode_region(data, out, scale_denom, top, left, flip) fills `out`, a writable C-contiguous (h, w, 3)
 * uint8 buffer, with the RGB pixels [top, top + h) x [left, left + w) of the image decoded at
 * 1/scale_denom size, mirrored left-right if `flip`. ValueError for anything it will not decode: not a
 * YCbCr, RGB or greyscale JPEG, a region outside the image, any libjpeg warning (corrupt data is refused,
 * never filled grey), a single-scan file with no end-of-image marker after its scan (truncated). The GIL
 * is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

#define ROWS_PER_CALL 16

struct strict_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void fail(j_common_ptr cinfo) {
    struct strict_error *err = (struct strict_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void warning_is_error(j_common_ptr cinfo, int level) {
    if (level < 0) fail(cinfo);  /* as simplejpeg's strict mode: corrupt data ends the decode */
}

/* Entropy-coded data never holds FF D9, so a cut-off file has no EOI after the start of its scan. */
static int has_eoi_after(const unsigned char *data, size_t size, size_t start) {
    for (size_t i = size; i >= start + 2; i--)
        if (data[i - 2] == 0xFF && data[i - 1] == 0xD9) return 1;
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
                  JDIMENSION left, JDIMENSION height, JDIMENSION width, int flip, char *message) {
    struct jpeg_decompress_struct cinfo;
    struct strict_error err;
    unsigned char *volatile rows = NULL;  /* volatile: freed after a longjmp */
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = fail;
    err.pub.emit_message = warning_is_error;
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        strcpy(message, err.message);
        goto failed;
    }
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB &&
        cinfo.jpeg_color_space != JCS_GRAYSCALE) {
        strcpy(message, "not a YCbCr, RGB or greyscale JPEG");
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
    /* Chroma at the first and last decoded column is upsampled as at an image edge, so one more column is
     * decoded on each side where there is one (jpeg_crop_scanline widens the left side to a whole iMCU). */
    JDIMENSION xoffset = left > 0 ? left - 1 : 0;
    JDIMENSION xwidth = left + width + 1 - xoffset;
    if (xoffset + xwidth > cinfo.output_width) xwidth = cinfo.output_width - xoffset;
    if (xwidth < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoffset, &xwidth);
    JDIMENSION skip = left - xoffset;
    size_t stride = (size_t)xwidth * 3;
    if (skip != 0 || xwidth != width || flip) {  /* rows go through a buffer, unless they fit `out` as they are */
        rows = malloc(stride * ROWS_PER_CALL);
        if (rows == NULL) {
            strcpy(message, "out of memory");
            goto failed;
        }
    }
    if (top > 0) jpeg_skip_scanlines(&cinfo, top);
    for (JDIMENSION y = 0; y < height;) {
        JSAMPROW targets[ROWS_PER_CALL];  /* several rows per call, as TurboJPEG asks for them: ~4% faster */
        JDIMENSION want = height - y < ROWS_PER_CALL ? height - y : ROWS_PER_CALL;
        for (JDIMENSION i = 0; i < want; i++)
            targets[i] = rows ? rows + i * stride : out + (size_t)(y + i) * width * 3;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, targets, want);
        if (got == 0) {
            strcpy(message, "libjpeg returned no row");
            goto failed;
        }
        for (JDIMENSION i = 0; rows && i < got; i++) {
            unsigned char *dst = out + (size_t)(y + i) * width * 3;
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

static PyObject *decode_region(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data, out;
    PyObject *target;
    int scale_denom, flip;
    unsigned int top, left;
    if (!PyArg_ParseTuple(args, "y*OiIIp", &data, &target, &scale_denom, &top, &left, &flip)) return NULL;
    if (PyObject_GetBuffer(target, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    char message[JMSG_LENGTH_MAX] = "";
    if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8) {
        PyErr_SetString(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8");
    } else if (out.ndim != 3 || out.shape[2] != 3 || out.itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous (height, width, 3) uint8 buffer");
    } else {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = decode(data.buf, (size_t)data.len, out.buf, scale_denom, top, left, (JDIMENSION)out.shape[0],
                    (JDIMENSION)out.shape[1], flip, message);
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            Py_INCREF(Py_None);
            result = Py_None;
        } else {
            PyErr_SetString(PyExc_ValueError, message);
        }
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, out, scale_denom, top, left, flip): fill out (h, w, 3 uint8) with that region."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }
