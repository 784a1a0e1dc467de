/* Write a JPEG of any layout libjpeg-turbo can write: any sampling factors per component, baseline or
 * progressive, Huffman or arithmetic coding, restart intervals; greyscale with one component.
 *
 * Why our own code: PIL and simplejpeg write only 4:4:4, 4:2:2, 4:2:0 (and 4:4:0 / 4:1:1 in simplejpeg),
 * never arithmetic coding nor factors such as 3x1 or 4:1:0; cjpeg writes them all but is a separate Debian
 * package (libjpeg-turbo-progs). This builds against the libjpeg the extension already needs. Loaded with
 * ctypes by bench/jpeg_layouts.py; libjpeg's errors longjmp back here, never through ctypes.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

struct err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
};

static void fail(j_common_ptr cinfo) { longjmp(((struct err *)cinfo->err)->jump, 1); }

/* rgb: h*w*ncomp bytes (ncomp 3: RGB in, YCbCr out; 1: greyscale). hv: 2*ncomp sampling factors.
 * Returns the size written to *out (free with free_jpeg), or 0 on a libjpeg error. */
unsigned long encode_layout(const unsigned char *rgb, int width, int height, int ncomp, const int *hv, int quality,
                            int progressive, int arithmetic, int restart_rows, unsigned char **out) {
    struct jpeg_compress_struct cinfo;
    struct err err;
    unsigned char *volatile buf = NULL;
    unsigned long size = 0;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = fail;
    jpeg_create_compress(&cinfo);
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buf);
        *out = NULL;
        return 0;
    }
    jpeg_mem_dest(&cinfo, (unsigned char **)&buf, &size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = ncomp;
    cinfo.in_color_space = ncomp == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    for (int c = 0; c < ncomp; c++) {
        cinfo.comp_info[c].h_samp_factor = hv[2 * c];
        cinfo.comp_info[c].v_samp_factor = hv[2 * c + 1];
    }
    cinfo.arith_code = arithmetic ? TRUE : FALSE;
    cinfo.restart_in_rows = restart_rows;
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * width * ncomp);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buf;
    return size;
}

void free_jpeg(unsigned char *p) { free(p); }
