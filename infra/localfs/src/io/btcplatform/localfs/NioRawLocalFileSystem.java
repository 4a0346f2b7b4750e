package io.btcplatform.localfs;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;

import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

/**
 * Hadoop's raw local file system, setting permissions through java.nio instead of forking
 * {@code chmod}.
 *
 * <p>Without Hadoop's native library (pyspark does not ship libhadoop.so), {@link
 * RawLocalFileSystem#setPermission} runs {@code chmod} in a child process for every file and
 * directory Spark creates: 5-10 ms each on a 2-core machine, which dominates writing thousands
 * of small partition files or a streaming checkpoint. The same bits are applied, and with the
 * native library present Hadoop's own path is used.
 *
 * <p>Local Spark sessions get it through {@link NioLocalFileSystem} ({@code fs.file.impl}) and
 * {@link NioLocalFs} ({@code fs.AbstractFileSystem.file.impl}).
 */
public class NioRawLocalFileSystem extends RawLocalFileSystem {

  private static final PosixFilePermission[] BITS = {
    PosixFilePermission.OTHERS_EXECUTE, PosixFilePermission.OTHERS_WRITE,
    PosixFilePermission.OTHERS_READ, PosixFilePermission.GROUP_EXECUTE,
    PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_READ,
    PosixFilePermission.OWNER_EXECUTE, PosixFilePermission.OWNER_WRITE,
    PosixFilePermission.OWNER_READ,
  };

  /** The java.nio permission set of the low 9 bits of {@code mode}. */
  static Set<PosixFilePermission> toPosix(int mode) {
    Set<PosixFilePermission> result = EnumSet.noneOf(PosixFilePermission.class);
    for (int bit = 0; bit < BITS.length; bit++) {
      if ((mode & (1 << bit)) != 0) {
        result.add(BITS[bit]);
      }
    }
    return result;
  }

  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    int mode = permission.toShort();
    if (NativeIO.isAvailable() || (mode & ~0777) != 0) {
      // native chmod, or sticky/setuid bits java.nio cannot express: Hadoop's own way
      super.setPermission(p, permission);
      return;
    }
    try {
      Files.setPosixFilePermissions(pathToFile(p).toPath(), toPosix(mode));
    } catch (UnsupportedOperationException e) {
      super.setPermission(p, permission); // not a POSIX file system
    }
  }
}
