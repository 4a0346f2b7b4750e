package io.btcplatform.localfs;

import org.apache.hadoop.fs.LocalFileSystem;

/**
 * The local file system for {@code fs.file.impl}: Hadoop's {@link LocalFileSystem} over {@link
 * NioRawLocalFileSystem}, writing no {@code .crc} side files.
 *
 * <p>It must stay a {@code LocalFileSystem}: {@code FileSystem.getLocal()} casts to it (the
 * RocksDB state store, local dir allocation). Not writing checksums halves the files a
 * partitioned write creates; existing {@code .crc} files are still verified on read and kept in
 * step on rename and delete.
 */
public class NioLocalFileSystem extends LocalFileSystem {
  public NioLocalFileSystem() {
    super(new NioRawLocalFileSystem());
    setWriteChecksum(false);
  }
}
