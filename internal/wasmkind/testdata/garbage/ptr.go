package main

import "unsafe"

func ptr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(&b[0]))) }
