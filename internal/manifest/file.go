package manifest

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// File encodings.
const (
	EncodingString = "string"
	EncodingBase64 = "base64"
	EncodingHex    = "hex"
)

// File is the value of a Files or Env entry. In JSON it is either a plain
// string or an object {"Data", "Encoding", "NoTemplates"}. Data holds the
// decoded content; Encoding records how Data is written in JSON ("string",
// "base64" or "hex"; empty means "string"). Entries with NoTemplates are
// passed to the marble verbatim.
type File struct {
	Data        string
	Encoding    string
	NoTemplates bool
}

// fileJSON is the object form of File.
type fileJSON struct {
	Data        string
	Encoding    string
	NoTemplates bool `json:",omitempty"`
}

// UnmarshalJSON accepts a string or an object and decodes Data according to
// Encoding, which is normalized to "string" when empty.
func (f *File) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*f = File{Data: s, Encoding: EncodingString}
		return nil
	}
	var obj fileJSON
	if err := json.Unmarshal(data, &obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("field %s must not be a JSON %s", typeErr.Field, jsonKind(typeErr.Value))
		}
		return errors.New("value must be a string or an object with Data, Encoding and NoTemplates")
	}
	decoded, err := decodeData(obj.Data, obj.Encoding)
	if err != nil {
		return err
	}
	encoding := obj.Encoding
	if encoding == "" {
		encoding = EncodingString
	}
	*f = File{Data: decoded, Encoding: encoding, NoTemplates: obj.NoTemplates}
	return nil
}

// MarshalJSON writes a plain string when that form is lossless and the
// object form, with Data re-encoded, otherwise.
func (f File) MarshalJSON() ([]byte, error) {
	var data string
	switch f.Encoding {
	case "", EncodingString:
		if !f.NoTemplates {
			return json.Marshal(f.Data)
		}
		data = f.Data
	case EncodingBase64:
		data = base64.StdEncoding.EncodeToString([]byte(f.Data))
	case EncodingHex:
		data = hex.EncodeToString([]byte(f.Data))
	default:
		return nil, fmt.Errorf("unknown encoding %q", f.Encoding)
	}
	encoding := f.Encoding
	if encoding == "" {
		encoding = EncodingString
	}
	return json.Marshal(fileJSON{Data: data, Encoding: encoding, NoTemplates: f.NoTemplates})
}

// decodeData decodes data written in encoding. Errors never include data.
func decodeData(data, encoding string) (string, error) {
	switch encoding {
	case "", EncodingString:
		return data, nil
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return "", errors.New("Data is not valid base64")
		}
		return string(b), nil
	case EncodingHex:
		b, err := hex.DecodeString(data)
		if err != nil {
			return "", errors.New("Data is not valid hex")
		}
		return string(b), nil
	}
	return "", errors.New("unknown Encoding (want string, base64 or hex)")
}
