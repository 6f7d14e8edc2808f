package pgproxy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"
)

// columnValue returns column i of a DataRow body (nil for NULL); ok is false
// when the row is malformed or shorter.
func columnValue(body []byte, i int) ([]byte, bool) {
	if len(body) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(body))
	if i >= n {
		return nil, false
	}
	b := body[2:]
	for j := 0; ; j++ {
		if len(b) < 4 {
			return nil, false
		}
		l := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if l < 0 {
			if j == i {
				return nil, true
			}
			continue
		}
		if int(l) > len(b) {
			return nil, false
		}
		if j == i {
			return b[:l], true
		}
		b = b[l:]
	}
}

// Type OIDs a tenant_id may have in binary format.
const (
	oidInt8 = 20
	oidInt2 = 21
	oidInt4 = 23
	oidUUID = 2950
)

// tenantText turns a tenant_id value into the text PostgreSQL would send.
func tenantText(v []byte, format int16, oid uint32) string {
	if format == 0 {
		return string(v)
	}
	switch {
	case oid == oidInt8 && len(v) == 8:
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(v)), 10)
	case oid == oidInt4 && len(v) == 4:
		return strconv.FormatInt(int64(int32(binary.BigEndian.Uint32(v))), 10)
	case oid == oidInt2 && len(v) == 2:
		return strconv.FormatInt(int64(int16(binary.BigEndian.Uint16(v))), 10)
	case oid == oidUUID && len(v) == 16:
		h := hex.EncodeToString(v)
		return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	return string(v) // text, varchar, name: the bytes are the text
}

// tenantColumn returns the index of the column that holds a row's tenant,
// or -1: the first column named tenant_id, else the first whose name ends
// in _tenant_id and that comes straight from a table column (an ORM's
// alias, TypeORM's "Invoice_tenant_id").
func tenantColumn(fields []pgproto3.FieldDescription) int {
	alias := -1
	for i, f := range fields {
		if string(f.Name) == "tenant_id" {
			return i
		}
		if alias < 0 && f.TableOID != 0 && bytes.HasSuffix(f.Name, []byte("_tenant_id")) {
			alias = i
		}
	}
	return alias
}
