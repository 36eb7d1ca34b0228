package sgx

// Internals exposed to the external tests in package sgx_test.

var ParsePCKExtensionValue = parsePCKExtensionValue

// RootCRLURL returns where c fetches the Root CA CRL.
func (c *PCSClient) RootCRLURL() string { return c.rootCRL }
